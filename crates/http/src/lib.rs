//! dpgate's HTTP/JSON front end, beside the wire protocol: the same users,
//! front door, planner, ledger, cache and audit log (through
//! [`dpgate_service::Service`] in the shared state), so one budget holds
//! across both. Routes live under `/v1` (see `GET /v1/openapi.json`);
//! `GET /` serves the browser console.
//!
//! Connections are handled like the wire side's: TLS with the same
//! certificate whenever `[server]` has one, at most `http.max_connections`
//! at once (more get 503 with SQLSTATE 53300), a time limit on each
//! request's headers, idle keep-alive connections closed, and on shutdown
//! running requests finish within `server.shutdown_grace_s`.

mod auth;
mod console;
mod error;
mod info;
mod openapi;
mod query;

use std::future::Future;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use dpgate_server::Shared;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

pub use error::{status_of, ApiError};
pub use openapi::ROUTES;

/// What every request handler reads.
pub(crate) struct Api {
    /// Service (config, ledger, backend) and login verifiers.
    pub shared: Arc<Shared>,
    /// Largest request body, from the config at start.
    pub max_body: usize,
    /// Time a request's body has to arrive (`http.header_timeout_s`).
    pub body_timeout: std::time::Duration,
}

/// The routes, over the shared state.
pub fn router(shared: Arc<Shared>) -> Router {
    let (max_body, body_timeout) = shared
        .config()
        .http
        .as_ref()
        .map_or((1024 * 1024, std::time::Duration::from_secs(10)), |h| {
            (h.max_body_bytes, h.header_timeout)
        });
    let api = Arc::new(Api {
        shared,
        max_body,
        body_timeout,
    });
    Router::new()
        .route("/v1/query", post(query::query))
        .route("/v1/explain", post(query::explain))
        .route("/v1/budget", get(info::budget))
        .route("/v1/queries", get(info::queries))
        .route("/v1/tables", get(info::tables))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/healthz", get(info::healthz))
        .route("/metrics", get(info::metrics))
        .route("/", get(console::index))
        .route("/console.js", get(console::script))
        .route("/console.css", get(console::style))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
}

async fn not_found() -> axum::response::Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "42704",
        "no such route",
        "GET /v1/openapi.json lists the routes",
    )
    .into_response()
}

async fn method_not_allowed() -> axum::response::Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "42704",
        "this route does not take that method",
        "GET /v1/openapi.json lists each route's method",
    )
    .into_response()
}

/// Serves HTTP on `listener` until `shutdown` resolves; then stops
/// accepting, lets running requests finish within the shutdown grace, and
/// closes the rest.
pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let config = shared.config();
    let http = config
        .http
        .clone()
        .ok_or_else(|| std::io::Error::other("[http] is not configured"))?;
    let tls = config
        .server
        .tls
        .as_ref()
        .map(|t| dpgate_server::tls_server_config(t, b"http/1.1"))
        .transpose()?
        .map(tokio_rustls::TlsAcceptor::from);
    let grace = config.server.shutdown_grace;
    let app = router(shared.clone());
    let slots = Arc::new(Semaphore::new(http.max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut running = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("http accept failed: {e}");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "http connection refused: too many connections");
            running.spawn(too_many(socket, tls.clone(), http.header_timeout));
            continue;
        };
        let (app, tls, shared) = (app.clone(), tls.clone(), shared.clone());
        let stopping = stopping.clone();
        let http = http.clone();
        running.spawn(async move {
            let _slot = slot;
            let _open = shared
                .service
                .metrics
                .open(dpgate_service::metrics::FrontEnd::Http);
            let served = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(http.header_timeout, acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => serve_one(stream, app, &http, stopping).await,
                        _ => return,
                    }
                }
                None => serve_one(socket, app, &http, stopping).await,
            };
            if let Err(e) = served {
                tracing::debug!(%peer, "http connection ended: {e}");
            }
        });
        while running.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop.send(true);
    tracing::info!(
        connections = running.len(),
        "http: stopped accepting; waiting for running requests"
    );
    let drained = tokio::time::timeout(grace, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("http: grace period over; closing the remaining connections");
        running.shutdown().await;
    }
    Ok(())
}

/// One connection: HTTP/1.1 with keep-alive, a limit on the time to send
/// headers, and an idle limit between requests. Idle or at shutdown, it
/// finishes the request it is running, then closes.
async fn serve_one<S>(
    stream: S,
    app: Router,
    http: &dpgate_config::Http,
    mut stopping: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let idle = idle::Idle::new(stream);
    let activity = idle.activity();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(http.header_timeout)
        .keep_alive(true)
        .max_buf_size(64 * 1024);
    let connection = builder.serve_connection(TokioIo::new(idle), TowerToHyperService::new(app));
    tokio::pin!(connection);
    let idle_timeout = http.idle_timeout;
    let mut closing = false;
    loop {
        tokio::select! {
            done = &mut connection => return done,
            _ = stopping.changed(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(idle_timeout / 4), if !closing => {
                if activity.idle_for() >= idle_timeout {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The answer past the connection limit: 503 with SQLSTATE 53300, then
/// close, as the wire side answers "too many clients".
async fn too_many(
    socket: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limit: std::time::Duration,
) {
    let body = serde_json::json!({
        "code": error::TOO_MANY_CONNECTIONS,
        "message": "too many HTTP connections are open",
        "hint": "retry in a moment, or ask the data owner to raise http.max_connections",
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(limit, async {
        match tls {
            Some(acceptor) => {
                if let Ok(mut s) = acceptor.accept(socket).await {
                    let _ = s.write_all(response.as_bytes()).await;
                    let _ = s.shutdown().await;
                }
            }
            None => {
                let mut s = socket;
                let _ = s.write_all(response.as_bytes()).await;
                let _ = s.shutdown().await;
            }
        }
    })
    .await;
}

mod idle {
    //! A stream wrapper that remembers when bytes last moved, so an idle
    //! keep-alive connection can be closed.

    use std::pin::Pin;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    pub struct Idle<S> {
        inner: S,
        activity: Activity,
    }

    /// When the stream last read or wrote, as ms since it opened.
    #[derive(Clone)]
    pub struct Activity {
        opened: Instant,
        last_ms: Arc<AtomicU64>,
    }

    impl Activity {
        fn touch(&self) {
            self.last_ms
                .store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
        }

        pub fn idle_for(&self) -> Duration {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            self.opened.elapsed().saturating_sub(last)
        }
    }

    impl<S> Idle<S> {
        pub fn new(inner: S) -> Idle<S> {
            Idle {
                inner,
                activity: Activity {
                    opened: Instant::now(),
                    last_ms: Arc::new(AtomicU64::new(0)),
                },
            }
        }

        pub fn activity(&self) -> Activity {
            self.activity.clone()
        }
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let before = buf.filled().len();
            let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
            if buf.filled().len() > before {
                self.activity.touch();
            }
            polled
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let polled = Pin::new(&mut self.inner).poll_write(cx, data);
            if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
                self.activity.touch();
            }
            polled
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }
}
