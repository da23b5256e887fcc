//! A deadline on PostgreSQL's answers: a connection that is waiting for PostgreSQL and hears
//! nothing for [`reply_timeout`] is closed with an error, so the caller (the replicator, a write
//! while PostgreSQL is the primary, a read) fails and retries instead of waiting forever.
//!
//! TCP keepalives and `tcp_user_timeout` (`config.rs`) notice a peer that vanished, but not one
//! that keeps the connection alive and never answers: a hung server, or a middlebox (proxy,
//! pooler, firewall) that holds the connection and forwards nothing. The `postgres` crate has no
//! per-request timeout, so the deadline sits in the byte stream, under TLS: the socket is wrapped
//! before the TLS layer by a `MakeTlsConnect` adapter ([`Bounded`]), so it sees encrypted bytes
//! and cannot tell where a reply ends. The rule: once a request was written, `limit` of silence
//! (no byte read or written) fails the read — unless the connection was simply idle in between:
//! the `postgres` crate drives a connection only while a call waits on it, so after an idle
//! stretch the first poll finds the timer long expired, before the new request is even queued
//! (the `postgres` crate polls the connection before the call, tokio-postgres reads before it
//! writes). So an expiry first only marks the connection suspect and gives it a short grace
//! ([`GRACE`]): an idle connection writes its new request within it, which clears the mark; a
//! connection owed an answer hears nothing in the grace either, and its read fails — `limit` +
//! `GRACE` after the last byte.
//!
//! Not covered: the start of a connection before TLS (tokio-postgres reads the answer to its
//! SSLRequest from the raw socket) and connections without TLS (`sslmode=disable`); for the
//! former [`crate::pg_connect::PgConfig::connect`] bounds the whole connect.

use postgres::tls::{MakeTlsConnect, TlsConnect};
use postgres::Socket;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// After an expiry, how long a connection has to show it was only idle (write or read a byte).
const GRACE: Duration = Duration::from_secs(1);

/// The variable that sets the deadline in seconds (`0` turns it off).
pub const REPLY_TIMEOUT_ENV: &str = "DUALWRITE_PG_REPLY_TIMEOUT";

/// How long a request may go unanswered: 30 s, or [`REPLY_TIMEOUT_ENV`]. Long enough for any
/// statement the bridge sends (a batch apply takes milliseconds; verify and backfill work in
/// chunks); a single statement that legitimately runs longer needs the variable raised.
pub fn reply_timeout() -> Option<Duration> {
    let default = Some(Duration::from_secs(30));
    let Ok(text) = std::env::var(REPLY_TIMEOUT_ENV) else { return default };
    match text.trim().parse::<u64>() {
        Ok(0) => None,
        Ok(secs) => Some(Duration::from_secs(secs)),
        Err(_) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(value = %text, "{REPLY_TIMEOUT_ENV} is not a whole number of seconds; using 30");
            });
            default
        }
    }
}

/// Close a connection (a `postgres::Client`, the capture's stream, …) on a thread of its own. A
/// client says goodbye when dropped (Terminate, then the TLS close) and waits for its connection
/// to end; on a connection whose peer went silent that wait lasts until the reply deadline
/// fails it (measured: the replicator thread stalled 19 s and more dropping an idle, black-holed
/// connection). Callers that give up on connections after a fault use this, so giving up costs
/// them nothing; the thread ends with the connection, within the deadline.
pub(crate) fn close_in_background<T: Send + 'static>(connection: T) {
    let spawned =
        std::thread::Builder::new().name("dualwrite-pg-close".into()).spawn(move || drop(connection));
    if let Err(e) = spawned {
        // No thread to spare: the connection was moved into the failed spawn and is dropped
        // there, on this thread; only the wait is lost, never the close.
        tracing::warn!(error = %e, "cannot close a PostgreSQL connection in the background");
    }
}

/// A TLS maker (or `NoTls`) whose connections carry the reply deadline.
pub struct Bounded<M> {
    inner: M,
    limit: Duration,
}

impl<M> Bounded<M> {
    pub fn new(inner: M, limit: Duration) -> Self {
        Bounded { inner, limit }
    }
}

impl<M> MakeTlsConnect<Socket> for Bounded<M>
where
    M: MakeTlsConnect<Guarded<Socket>>,
{
    type Stream = M::Stream;
    type TlsConnect = BoundedConnect<M::TlsConnect>;
    type Error = M::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        Ok(BoundedConnect { inner: self.inner.make_tls_connect(domain)?, limit: self.limit })
    }
}

pub struct BoundedConnect<T> {
    inner: T,
    limit: Duration,
}

impl<T> TlsConnect<Socket> for BoundedConnect<T>
where
    T: TlsConnect<Guarded<Socket>>,
{
    type Stream = T::Stream;
    type Error = T::Error;
    type Future = T::Future;

    fn connect(self, stream: Socket) -> T::Future {
        self.inner.connect(Guarded {
            inner: stream,
            limit: self.limit,
            started: false,
            suspect_since: None,
            timer: None,
        })
    }
}

/// A byte stream that fails a read after [`Guarded::limit`] of silence while PostgreSQL owes an
/// answer (see the module comment).
pub struct Guarded<S> {
    inner: S,
    limit: Duration,
    /// A request was written at some point (before that, nothing is owed).
    started: bool,
    /// When the timer expired without a byte moved since: idle, or no answer (see the module
    /// comment). A mark older than twice the grace is from an earlier stretch and counts for nothing.
    suspect_since: Option<std::time::Instant>,
    /// Expires `limit` after the last byte read or written.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> std::fmt::Debug for Guarded<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded").field("limit", &self.limit).field("started", &self.started).finish()
    }
}

impl<S> Guarded<S> {
    /// Bytes moved: the silence starts again from now. The timer is polled at once, so it wakes
    /// the connection's task even if nothing else polls it (tokio-postgres reads before it
    /// writes, so after a write no read may be polled until something wakes it).
    fn activity(&mut self, cx: &mut Context<'_>) {
        self.suspect_since = None;
        self.arm(self.limit, cx);
    }

    fn arm(&mut self, after: Duration, cx: &mut Context<'_>) {
        let mut timer = Box::pin(tokio::time::sleep(after));
        let _ = timer.as_mut().poll(cx);
        self.timer = Some(timer);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.started && buf.filled().len() > before {
                    this.activity(cx);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.started => {
                let limit = this.limit;
                let expired = match this.timer.as_mut() {
                    Some(timer) => timer.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if !expired {
                    return Poll::Pending;
                }
                if this.suspect_since.is_some_and(|t| t.elapsed() <= 2 * GRACE) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("PostgreSQL sent nothing for {limit:?} while an answer was owed ({REPLY_TIMEOUT_ENV})"),
                    )));
                }
                // Idle, or no answer: the grace tells (module comment).
                this.suspect_since = Some(std::time::Instant::now());
                this.arm(GRACE, cx);
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let out = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(out, Poll::Ready(Ok(n)) if n > 0) {
            this.started = true;
            this.activity(cx);
        }
        out
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let out = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(out, Poll::Ready(Ok(n)) if n > 0) {
            this.started = true;
            this.activity(cx);
        }
        out
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn silent_server() -> std::net::SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            // Accepts, answers the first request with a few bytes, then says nothing.
            use std::io::{Read, Write};
            if let Some(Ok(mut s)) = listener.incoming().next() {
                let mut buf = [0u8; 5];
                let _ = s.read_exact(&mut buf);
                let _ = s.write_all(b"part");
                std::thread::sleep(Duration::from_secs(20));
            }
        });
        addr
    }

    fn guarded(s: tokio::net::TcpStream, limit: Duration) -> Guarded<tokio::net::TcpStream> {
        Guarded { inner: s, limit, started: false, suspect_since: None, timer: None }
    }

    #[test]
    fn a_reply_that_stops_half_way_fails_after_the_limit() {
        let addr = silent_server();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let started = std::time::Instant::now();
        let r = rt.block_on(async {
            let mut g =
                guarded(tokio::net::TcpStream::connect(addr).await.unwrap(), Duration::from_millis(300));
            g.write_all(b"hello").await.unwrap();
            let mut buf = [0u8; 4];
            g.read_exact(&mut buf).await.unwrap(); // the first part of the answer
            g.read(&mut buf).await // and then nothing
        });
        assert!(r.is_err(), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn an_idle_connection_is_not_failed_by_the_timer_that_lapsed_meanwhile() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            if let Some(Ok(mut s)) = listener.incoming().next() {
                let mut buf = [0u8; 1];
                while s.read_exact(&mut buf).is_ok() {
                    let _ = s.write_all(b"k"); // answers every byte at once
                }
            }
        });
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut g = rt.block_on(async {
            let mut g =
                guarded(tokio::net::TcpStream::connect(addr).await.unwrap(), Duration::from_millis(200));
            g.write_all(b"a").await.unwrap();
            let mut b = [0u8; 1];
            g.read_exact(&mut b).await.unwrap();
            g
        });
        std::thread::sleep(Duration::from_millis(600)); // idle, nothing polls the connection
        let r = rt.block_on(async {
            // As tokio-postgres does: a read is polled before the next request is written.
            let mut b = [0u8; 1];
            {
                // Twice, as the postgres crate does: the connection is polled once before the call
                // queues its request, and reads again before it writes.
                let read = async { g.read_exact(&mut b).await.map(|_| ()) };
                tokio::pin!(read);
                assert!(futures_poll_once(read.as_mut()).await.is_none(), "the lapsed timer failed a poll");
                assert!(futures_poll_once(read.as_mut()).await.is_none(), "the lapsed timer failed a poll");
            }
            g.write_all(b"b").await.unwrap();
            g.read_exact(&mut b).await.map(|_| b)
        });
        assert_eq!(r.unwrap(), *b"k");
    }

    /// Poll a future once: `Some` if it finished.
    async fn futures_poll_once<F: Future + Unpin>(mut f: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            Poll::Ready(match Pin::new(&mut f).poll(cx) {
                Poll::Ready(v) => Some(v),
                Poll::Pending => None,
            })
        })
        .await
    }
}
