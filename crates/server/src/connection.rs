//! One client connection, from TLS negotiation to the last message:
//! startup and idle timeouts, shutdown notices, the connection limit, and
//! output that is flushed once per batch of requests rather than once per
//! message (PostgreSQL's rule: flush when about to wait for the client).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::ErrorInfo;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use pgwire::tokio::TlsAcceptor;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::codec::{Framed, FramedParts};

/// A client must finish authenticating within this time (PostgreSQL's
/// authentication_timeout is 60 s). Waiting logins hold no connection slot,
/// only a pending-login place, so the time can leave room for a loaded
/// machine.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections that may be negotiating or authenticating at once: twice
/// `server.max_connections`, and at least 128 (a pool opening all its
/// connections at once must not be refused). They hold no connection slot:
/// only an authenticated client takes one of `server.max_connections`, so
/// unauthenticated clients cannot crowd out analysts.
pub fn max_pending_logins(max_connections: usize) -> usize {
    max_connections.saturating_mul(2).max(128)
}

/// Output buffered beyond this is written even before a flush point.
const MAX_BUFFERED: usize = 64 * 1024;

/// What the connection does once negotiated.
pub(crate) enum Admission {
    /// Serve it; the permit is one of the pending-login places.
    Serve(tokio::sync::OwnedSemaphorePermit),
    /// Answer the startup packet with "too many connections" and close.
    TooMany,
}

/// Settings every connection shares.
pub(crate) struct Limits {
    pub idle_timeout: Option<Duration>,
    pub tls: Option<TlsAcceptor>,
    /// Refuse logins that did not negotiate TLS (`server.require_tls`).
    pub require_tls: bool,
    /// Named prepared statements (and portals) one connection may hold.
    pub max_prepared: usize,
    /// The `server.max_connections` slots, taken once a client has logged in.
    pub slots: Arc<tokio::sync::Semaphore>,
}

/// Serves one TCP connection until the client leaves, the idle timeout
/// passes, or `shutdown` turns true while the connection waits.
pub(crate) async fn serve_connection<H: PgWireServerHandlers>(
    tcp: TcpStream,
    handlers: Arc<H>,
    limits: Arc<Limits>,
    admission: Admission,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let negotiated = tokio::time::timeout(STARTUP_TIMEOUT, negotiate_tls(tcp, limits.tls.clone()))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS negotiation timed out"))??;
    let Some(socket) = negotiated else {
        return Ok(());
    };
    let parts = socket.into_parts();
    let mut new_parts = FramedParts::new(Coalesce::new(parts.io), parts.codec);
    new_parts.read_buf = parts.read_buf;
    new_parts.write_buf = parts.write_buf;
    let mut socket = Framed::from_parts(new_parts);

    let mut pending_login = match admission {
        Admission::Serve(permit) => Some(permit),
        Admission::TooMany => {
            // PostgreSQL answers the startup packet, then closes.
            let _ = tokio::time::timeout(Duration::from_secs(5), socket.next()).await;
            return too_many_clients(&mut socket).await;
        }
    };
    let mut slot = None;
    let mut named = crate::named::NamedObjects::new(limits.max_prepared);

    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let errors = handlers.error_handler();
    let started = tokio::time::Instant::now();

    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        // Take what the client already sent without waiting; flush our
        // output only when we would otherwise block on the client.
        let message = match guarded(socket.next()).now_or_never() {
            Some(m) => m,
            None => {
                socket.get_mut().flush_buffer().await?;
                let wait = if starting {
                    Some(STARTUP_TIMEOUT.saturating_sub(started.elapsed()))
                } else {
                    limits.idle_timeout
                };
                tokio::select! {
                    m = guarded(socket.next()) => m,
                    _ = sleep_or_never(wait) => {
                        if starting {
                            return Ok(());
                        }
                        return fatal(
                            &mut socket,
                            "57P05",
                            "terminating connection due to idle-session timeout",
                            "reconnect; the data owner sets server.idle_timeout_s",
                        )
                        .await;
                    }
                    _ = stopping(&mut shutdown) => {
                        return fatal(
                            &mut socket,
                            "57P01",
                            "terminating connection due to administrator command",
                            "dpgate is shutting down; reconnect in a moment",
                        )
                        .await;
                    }
                }
            }
        };
        let message = match message {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => {
                // A frame the decoder rejects (a length below its header,
                // a field past its end): PostgreSQL's answer, then close.
                tracing::debug!("invalid frontend message: {e}");
                socket.write_buffer_mut().clear();
                return fatal(
                    &mut socket,
                    "08P01",
                    "invalid frontend message",
                    "this is a client or network fault; reconnect",
                )
                .await;
            }
            Ok(None) => break,
            Err(()) => {
                tracing::warn!("a malformed message from the client made the protocol decoder fail; connection closed");
                socket.write_buffer_mut().clear();
                return fatal(
                    &mut socket,
                    "08P01",
                    "invalid frontend message: its fields do not fit its length",
                    "this is a client or network fault; reconnect",
                )
                .await;
            }
        };
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        // A login without TLS where TLS is required: refused before any
        // authentication exchange, so no password proof ever crosses in
        // the clear. Cancel requests (which older libpq sends without TLS)
        // carry only a random key and are still served.
        if limits.require_tls
            && !socket.is_secure()
            && matches!(message, PgWireFrontendMessage::Startup(_))
        {
            return fatal(
                &mut socket,
                "28000",
                "dpgate accepts only TLS connections here (server.require_tls), and this one did not negotiate TLS",
                "connect with sslmode=verify-full (or sslmode=require) and channel_binding=require",
            )
            .await;
        }
        let message = bounded_execute(message);
        let is_extended = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        // After an error the extended protocol skips to Sync: pgwire does
        // that for the messages it is given, so only look at the others.
        let skipping = matches!(socket.state(), PgWireConnectionState::AwaitingSync);
        let admitted = if skipping {
            Ok(())
        } else {
            named.admit(&message)
        };
        if let Err(info) = admitted {
            let mut e = pgwire::error::PgWireError::UserError(info);
            errors.on_error(&socket, &mut e);
            process_error(&mut socket, e, is_extended).await?;
            continue;
        }
        let is_cancel = matches!(message, PgWireFrontendMessage::CancelRequest(_));
        if let Err(mut e) = process_message(
            message,
            &mut socket,
            startup.clone(),
            simple.clone(),
            extended.clone(),
            copy.clone(),
            cancel.clone(),
        )
        .await
        {
            errors.on_error(&socket, &mut e);
            let is_fatal = e.is_fatal();
            process_error(&mut socket, e, is_extended).await?;
            if is_fatal {
                break;
            }
        }
        if is_cancel {
            break;
        }
        if slot.is_none() && matches!(socket.state(), PgWireConnectionState::ReadyForQuery) {
            // Logged in: trade the pending-login place for a connection slot.
            pending_login = None;
            slot = match limits.slots.clone().try_acquire_owned() {
                Ok(s) => Some(s),
                Err(_) => {
                    tracing::warn!("connection refused after login: too many connections");
                    // The client sees the refusal, not the login's success.
                    socket.write_buffer_mut().clear();
                    socket.get_mut().discard_unsent();
                    return too_many_clients(&mut socket).await;
                }
            };
        }
    }
    drop(pending_login);
    socket.get_mut().flush_buffer().await
}

thread_local! {
    static DECODING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is decoding a client message under [`guarded`]: a
/// panic there is caught and closes only that connection. (The fuzz target
/// for the wire protocol counts every other panic as a crash.)
pub fn decoding_client_message() -> bool {
    DECODING.with(|d| d.get())
}

/// Polls `next` (a read and decode of one client message) so that a panic
/// in the protocol decoder — pgwire's field readers index past the end of
/// short frames — becomes `Err(())` instead of ending the task.
pub(crate) async fn guarded<F: std::future::Future + Unpin>(next: F) -> Result<F::Output, ()> {
    struct Decoding<F>(F);
    impl<F: std::future::Future + Unpin> std::future::Future for Decoding<F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            struct Reset;
            impl Drop for Reset {
                fn drop(&mut self) {
                    DECODING.with(|d| d.set(false));
                }
            }
            DECODING.with(|d| d.set(true));
            let _reset = Reset;
            Pin::new(&mut self.0).poll(cx)
        }
    }
    std::panic::AssertUnwindSafe(Decoding(next))
        .catch_unwind()
        .await
        .map_err(|_| ())
}

/// Most rows one Execute may ask for before the portal suspends. pgwire
/// reserves room for the requested count before reading any row, so an
/// Execute for 2³¹ − 1 rows would allocate ~100 GB (and abort the process)
/// and a negative count overflowed; dpgate's answers are far smaller.
const MAX_EXECUTE_ROWS: i32 = 100_000;

/// An Execute's row limit as PostgreSQL reads it (≤ 0: all rows), and at
/// most [`MAX_EXECUTE_ROWS`] (the portal then suspends, and a client that
/// asked for a limit executes again for the rest).
fn bounded_execute(message: PgWireFrontendMessage) -> PgWireFrontendMessage {
    match message {
        PgWireFrontendMessage::Execute(mut e) => {
            e.max_rows = e.max_rows.clamp(0, MAX_EXECUTE_ROWS);
            PgWireFrontendMessage::Execute(e)
        }
        other => other,
    }
}

/// Resolves once the server is shutting down.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn sleep_or_never(wait: Option<Duration>) {
    match wait {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// PostgreSQL's answer when no connection slot or login place is free.
async fn too_many_clients<T, S>(
    socket: &mut Framed<Coalesce<T>, pgwire::tokio::server::PgWireMessageServerCodec<S>>,
) -> io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    fatal(
        socket,
        "53300",
        "sorry, too many clients already",
        "retry later, or ask the data owner to raise server.max_connections",
    )
    .await
}

/// Sends a FATAL error and closes the connection.
async fn fatal<T, S>(
    socket: &mut Framed<Coalesce<T>, pgwire::tokio::server::PgWireMessageServerCodec<S>>,
    code: &str,
    message: &str,
    hint: &str,
) -> io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut info = ErrorInfo::new("FATAL".into(), code.into(), message.into());
    info.hint = Some(hint.into());
    let _ = socket
        .send(PgWireBackendMessage::ErrorResponse(info.into()))
        .await;
    socket.get_mut().flush_buffer().await?;
    let _ = socket.get_mut().inner.shutdown().await;
    Ok(())
}

/// A writer that keeps what is written until [`Coalesce::flush_buffer`]
/// (or until a lot is pending), so that the many small messages of one
/// extended-protocol batch leave in one write.
pub(crate) struct Coalesce<T> {
    inner: T,
    buffer: Vec<u8>,
    written: usize,
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    fn new(inner: T) -> Self {
        Coalesce {
            inner,
            buffer: Vec::with_capacity(8 * 1024),
            written: 0,
        }
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buffer.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buffer[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buffer.clear();
        self.written = 0;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Forgets what is buffered and not yet written (the login's success
    /// messages, when the login is then refused).
    fn discard_unsent(&mut self) {
        self.buffer.truncate(self.written);
    }

    /// Writes out everything buffered.
    async fn flush_buffer(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_drain(cx)).await
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buffer.len() >= MAX_BUFFERED {
            ready!(this.poll_drain(cx))?;
        }
        this.buffer.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    /// Framed flushes after nearly every message; the real flush waits
    /// for the connection loop's flush point.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Loads the PEM certificate chain and key into a TLS acceptor that also
/// offers ALPN "postgresql" (for direct TLS connections).
pub(crate) fn tls_acceptor(tls: &dpgate_config::Tls) -> io::Result<TlsAcceptor> {
    Ok(TlsAcceptor::from(tls_server_config(tls, b"postgresql")?))
}

/// The rustls server settings for the configured certificate and key,
/// offering the ALPN protocol `alpn` (each front end its own).
pub fn tls_server_config(
    tls: &dpgate_config::Tls,
    alpn: &[u8],
) -> io::Result<Arc<pgwire::tokio::tokio_rustls::rustls::ServerConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {e}"))
    };
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| bad(&format!("cannot read {}", tls.cert.display()), &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&format!("bad certificate in {}", tls.cert.display()), &e))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| {
        bad(
            &format!("cannot read a private key from {}", tls.key.display()),
            &e,
        )
    })?;
    let mut config = pgwire::tokio::tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("the TLS certificate and key do not fit", &e))?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}
