//! Serving connections: HTTP/1.1 and cleartext HTTP/2 with hyper-util's automatic builder (as
//! `axum::serve` does), graceful shutdown, and the two connection timeouts `axum::serve` lacks.
//!
//! Each connection has a watchdog that closes it when
//! - a request's headers take longer than the header-read timeout, counted from the
//!   connection's start or from the first byte of a further request (slowloris: a client that
//!   trickles headers, or connects and sends nothing), or
//! - it sits idle, with no request in flight, for the idle timeout.
//!
//! hyper's own HTTP/1 `header_read_timeout` is not used: it also runs while a keep-alive
//! connection waits for its next request, so it would close idle connections after the
//! header-read timeout rather than the idle timeout; and it does not cover the bytes hyper-util
//! reads to tell HTTP/1 from HTTP/2. A request counts as in flight until its answer's body has
//! been sent (or dropped), so a slow download is never mistaken for an idle connection.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

/// How long connections may take to send headers, and may sit idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest a request's headers may take.
    pub header_read_timeout: Duration,
    /// Longest a connection may sit with no request in flight.
    pub idle_timeout: Duration,
}

impl ConnectionLimits {
    /// The limits of `http.header_read_timeout_secs` and `http.idle_timeout_secs`.
    pub fn of(http: &crate::config::HttpSettings) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(http.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(http.idle_timeout_secs),
        }
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::of(&crate::config::HttpSettings::default())
    }
}

/// How long a connection being closed by its watchdog may take to say goodbye (HTTP/2 GOAWAY)
/// before it is dropped.
const CLOSING_GRACE: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, asks every
/// connection to finish (HTTP/1: after its request in flight; HTTP/2: GOAWAY) and returns when
/// all have.
///
/// # Errors
/// None so far: accept errors are logged and retried, as `axum::serve` does.
pub(crate) async fn serve(
    router: axum::Router,
    listener: TcpListener,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // HTTP/2 WebSockets (RFC 8441), as axum::serve allows.
    builder.http2().enable_connect_protocol();
    let builder = Arc::new(builder);
    // Every connection task holds a receiver: the sender sees them all gone when they finish.
    let (stop_tx, stop_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_error(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tokio::spawn(connection(
            builder.clone(),
            router.clone(),
            stream,
            limits,
            stop_rx.clone(),
        ));
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(());
    stop_tx.closed().await;
    Ok(())
}

/// Connection-level errors concern one client; others (too many open files) may pass: wait a
/// second, as hyper and axum do.
async fn accept_error(e: &io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!("accept error: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: axum::Router,
    stream: TcpStream,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<()>,
) {
    let activity = Arc::new(Activity::new(limits));
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let guard = InFlight::begin(&activity, request.version());
            let call = router.clone().oneshot(request.map(Body::new));
            async move {
                let response = match call.await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                // The request stays in flight until its body is sent.
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(Finishing {
                        inner: body,
                        _guard: guard,
                    })
                }))
            }
        })
    };
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    let mut closing_by: Option<Instant> = None;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!("connection ended: {e}");
                }
                break;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            expiry = activity.expired(), if closing_by.is_none() => match expiry {
                // No request came, or it never finished its headers: nothing to finish.
                Expiry::Headers => {
                    tracing::debug!("closing a connection whose request headers took too long");
                    break;
                }
                Expiry::Idle => {
                    conn.as_mut().graceful_shutdown();
                    closing_by = Some(Instant::now() + CLOSING_GRACE);
                }
            },
            () = sleep_until(closing_by), if closing_by.is_some() => break,
        }
    }
    drop(stop);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Where a connection stands.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request's headers since then: the connection's start, or the first byte
    /// after it went idle.
    Headers(Instant),
    /// No request in flight, nothing read, since then.
    Idle(Instant),
    /// Requests in flight.
    Busy(usize),
}

/// Why a watchdog fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    Headers,
    Idle,
}

#[derive(Debug)]
struct Activity {
    limits: ConnectionLimits,
    state: Mutex<(Phase, bool)>,
}

impl Activity {
    fn new(limits: ConnectionLimits) -> Self {
        Self {
            limits,
            // (phase, HTTP/2)
            state: Mutex::new((Phase::Headers(Instant::now()), false)),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut (Phase, bool)) -> T) -> T {
        f(&mut self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Bytes arrived. On an idle HTTP/1 connection they start a request, whose headers now
    /// have the header-read timeout; HTTP/2 also reads frames that are no requests (pings,
    /// window updates), so there only requests count.
    fn read(&self) {
        self.with(|(phase, http2)| {
            if let Phase::Idle(_) = phase
                && !*http2
            {
                *phase = Phase::Headers(Instant::now());
            }
        });
    }

    fn begin(&self, version: Version) {
        self.with(|(phase, http2)| {
            *http2 |= version == Version::HTTP_2;
            *phase = match *phase {
                Phase::Busy(n) => Phase::Busy(n + 1),
                Phase::Headers(_) | Phase::Idle(_) => Phase::Busy(1),
            };
        });
    }

    fn end(&self) {
        self.with(|(phase, _)| {
            *phase = match *phase {
                Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
                _ => Phase::Idle(Instant::now()),
            };
        });
    }

    /// When the current phase runs out, and why; `None` while requests are in flight.
    fn deadline(&self) -> Option<(Instant, Expiry)> {
        match self.with(|(phase, _)| *phase) {
            Phase::Headers(since) => {
                Some((since + self.limits.header_read_timeout, Expiry::Headers))
            }
            Phase::Idle(since) => Some((since + self.limits.idle_timeout, Expiry::Idle)),
            Phase::Busy(_) => None,
        }
    }

    /// Resolves when the connection has been waiting for headers, or idle, too long.
    async fn expired(&self) -> Expiry {
        loop {
            match self.deadline() {
                Some((deadline, why)) if deadline <= Instant::now() => return why,
                Some((deadline, _)) => tokio::time::sleep_until(deadline).await,
                // Looked at again later: a request in flight is bounded by the request timeout.
                None => {
                    tokio::time::sleep(
                        self.limits
                            .header_read_timeout
                            .min(self.limits.idle_timeout),
                    )
                    .await;
                }
            }
        }
    }
}

/// A request in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>, version: Version) -> Self {
        activity.begin(version);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// An answer's body that keeps its request in flight until it is sent or dropped.
struct Finishing {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for Finishing {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's socket, telling its [`Activity`] when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_follows_requests() {
        let activity = Arc::new(Activity::new(limits()));
        let start = Instant::now();
        assert_eq!(activity.expired().await, Expiry::Headers);
        assert_eq!(start.elapsed(), Duration::from_secs(10), "from the start");

        let guard = InFlight::begin(&activity, Version::HTTP_11);
        assert!(activity.deadline().is_none(), "in flight");
        drop(guard);
        let idle = Instant::now();
        activity.read();
        assert!(
            matches!(activity.deadline(), Some((_, Expiry::Headers))),
            "a new request"
        );
        let guard = InFlight::begin(&activity, Version::HTTP_11);
        drop(guard);
        assert_eq!(activity.expired().await, Expiry::Idle);
        assert_eq!(idle.elapsed(), Duration::from_secs(60));

        let h2 = Arc::new(Activity::new(limits()));
        drop(InFlight::begin(&h2, Version::HTTP_2));
        h2.read();
        assert!(
            matches!(h2.deadline(), Some((_, Expiry::Idle))),
            "HTTP/2 frames that are no requests keep it idle"
        );
        let a = InFlight::begin(&h2, Version::HTTP_2);
        let b = InFlight::begin(&h2, Version::HTTP_2);
        drop(a);
        assert!(h2.deadline().is_none(), "one stream still open");
        drop(b);
        assert!(h2.deadline().is_some());
    }
}
