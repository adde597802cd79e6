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

mod admission;
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
    /// Password checks (PBKDF2) that may run at once.
    pub logins: Arc<Semaphore>,
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
    // Half the cores at most check passwords; the rest serve queries.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let api = Arc::new(Api {
        shared,
        max_body,
        body_timeout,
        logins: Arc::new(Semaphore::new((cores / 2).max(1))),
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
        .layer(axum::middleware::map_response(no_sniffing))
        .with_state(api)
}

/// Every response is what its Content-Type says (no MIME sniffing).
async fn no_sniffing(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    response
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
    let pending = Arc::new(Semaphore::new(dpgate_server::max_pending_logins(
        http.max_connections,
    )));
    // Connections turned away are answered by at most this many tasks;
    // beyond, they are closed at once.
    let turning_away = Arc::new(Semaphore::new(64));
    let (stop, stopping) = watch::channel(false);
    let mut running = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, say: wait instead of spinning.
                    tracing::warn!("http accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // hyper writes a response's head and body separately; Nagle's
        // algorithm would hold the second for the client's ACK.
        let _ = socket.set_nodelay(true);
        let Ok(place) = pending.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "http connection refused: too many connections");
            if let Ok(permit) = turning_away.clone().try_acquire_owned() {
                running.spawn(too_many(socket, tls.clone(), http.header_timeout, permit));
            }
            continue;
        };
        let admission = Arc::new(admission::Admission::new(place, slots.clone()));
        let (app, tls, shared) = (app.clone(), tls.clone(), shared.clone());
        let stopping = stopping.clone();
        let http = http.clone();
        running.spawn(async move {
            let _open = shared
                .service
                .metrics
                .open(dpgate_service::metrics::FrontEnd::Http);
            let served = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(http.header_timeout, acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => {
                            serve_one(stream, app, &http, admission, stopping, grace).await
                        }
                        _ => return,
                    }
                }
                None => serve_one(socket, app, &http, admission, stopping, grace).await,
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
/// headers, an idle limit between requests, and the login time limit for
/// a connection that has made no authenticated request. Closing, it
/// finishes the request it is running, but no later than `grace` (a
/// client that stops reading cannot hold it open).
async fn serve_one<S>(
    stream: S,
    app: Router,
    http: &dpgate_config::Http,
    admission: Arc<admission::Admission>,
    mut stopping: watch::Receiver<bool>,
    grace: std::time::Duration,
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
    // Each request carries the connection's admission, which its first
    // authenticated request turns into a slot.
    let tagged = admission.clone();
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(tagged.clone());
            let mut app = app.clone();
            async move { tower_service::Service::call(&mut app, request).await }
        });
    let connection = builder.serve_connection(TokioIo::new(idle), service);
    tokio::pin!(connection);
    let idle_timeout = http.idle_timeout;
    let check = (idle_timeout / 4).min(std::time::Duration::from_secs(1));
    let mut closing: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            done = &mut connection => return done,
            _ = stopping.changed(), if closing.is_none() => {
                closing = Some(std::time::Instant::now());
                connection.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(check) => {
                match closing {
                    Some(since) if since.elapsed() >= grace => return Ok(()),
                    Some(_) => {}
                    None => {
                        let unauthenticated = !admission.admitted()
                            && admission.opened.elapsed() >= dpgate_server::STARTUP_TIMEOUT;
                        if unauthenticated || activity.idle_for() >= idle_timeout {
                            closing = Some(std::time::Instant::now());
                            connection.as_mut().graceful_shutdown();
                        }
                    }
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
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let limit = limit.min(std::time::Duration::from_secs(5));
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
