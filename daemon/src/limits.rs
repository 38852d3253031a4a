//! Connection limits of the listeners: how many connections each listener and each peer
//! may hold, and how long a connection may sit idle.
//!
//! Before these limits, 1,100 idle TCP connections took the daemon's descriptors and
//! Unix-socket clients timed out (issue 10, defect 8). Now every listener has its own
//! budget, split per peer (uid on Unix sockets, address on TCP), sized so that the sums
//! stay under the descriptor limit; a connection over budget is closed as soon as it is
//! accepted. A connection that sends nothing within `handshake_ms` of being accepted, or
//! has no request open for `idle_ms`, is closed too (it reads end of stream).

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::time::Sleep;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use crate::tenant::lock;

/// Who a connection's budget is charged to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerKey {
    Uid(u32),
    Ip(IpAddr),
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerKey::Uid(u) => write!(f, "uid {u}"),
            PeerKey::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Connections open on one listener, in total and per peer.
pub struct ConnLimiter {
    name: &'static str,
    max_total: usize,
    max_per_peer: usize,
    open: Mutex<(usize, HashMap<PeerKey, usize>)>,
    refused: AtomicU64,
}

/// One admitted connection; dropping it gives its place back.
pub struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    key: PeerKey,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut open = lock(&self.limiter.open);
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.1.remove(&self.key);
            }
        }
    }
}

impl ConnLimiter {
    pub fn new(name: &'static str, max_total: usize, max_per_peer: usize) -> Arc<ConnLimiter> {
        Arc::new(ConnLimiter {
            name,
            max_total: max_total.max(1),
            max_per_peer: max_per_peer.max(1),
            open: Mutex::new((0, HashMap::new())),
            refused: AtomicU64::new(0),
        })
    }

    /// Admits one more connection of `key`, or says which budget is spent.
    pub fn try_admit(self: &Arc<Self>, key: PeerKey) -> Result<ConnPermit, String> {
        let mut open = lock(&self.open);
        let mine = open.1.get(&key).copied().unwrap_or(0);
        let refusal = if open.0 >= self.max_total {
            Some(format!(
                "{}: {} connections open, the most allowed",
                self.name, self.max_total
            ))
        } else if mine >= self.max_per_peer {
            Some(format!(
                "{}: {key} has {mine} connections open, the most one peer may hold",
                self.name
            ))
        } else {
            None
        };
        if let Some(why) = refusal {
            drop(open);
            // One warning per 64 refusals: a flood must not flood the log too.
            if self
                .refused
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(64)
            {
                warn!(%why, "connection refused");
            }
            return Err(why);
        }
        open.0 += 1;
        *open.1.entry(key.clone()).or_insert(0) += 1;
        Ok(ConnPermit {
            limiter: self.clone(),
            key,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        lock(&self.open).0
    }
}

/// Activity of one connection, shared by its I/O wrapper (bytes read) and the request
/// layer (requests open), which together decide when it is idle.
pub struct ConnState {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last byte read or request finished.
    last_ms: AtomicU64,
    active: AtomicUsize,
    spoke: AtomicBool,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            spoke: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// A request started on this connection.
    pub fn begin(&self) {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.touch();
    }

    /// A request of this connection finished.
    pub fn end(&self) {
        self.touch();
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// Requests open on this connection.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

/// What a limited connection adds to its transport's connect info: the request layer
/// finds it in the request extensions and counts requests on `conn`.
#[derive(Clone)]
pub struct PeerInfo<C> {
    pub inner: C,
    pub conn: Arc<ConnState>,
}

/// How long a connection may stay silent.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Until its first byte.
    pub handshake: Duration,
    /// With no request open.
    pub idle: Duration,
}

/// A connection that holds its place in the listener's budget and reads end of stream
/// once it has been idle too long.
pub struct Limited<IO> {
    io: IO,
    conn: Arc<ConnState>,
    timeouts: Timeouts,
    timer: Pin<Box<Sleep>>,
    _permit: ConnPermit,
}

impl<IO> Limited<IO> {
    pub fn new(io: IO, permit: ConnPermit, timeouts: Timeouts) -> Limited<IO> {
        Limited {
            io,
            conn: Arc::new(ConnState::new()),
            timer: Box::pin(tokio::time::sleep(timeouts.handshake)),
            timeouts,
            _permit: permit,
        }
    }

    /// `Ready` when the connection has been idle past its limit (the read then reports
    /// end of stream); otherwise arms the timer for the next check.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let c = &self.conn;
            let limit = if c.spoke.load(Ordering::Relaxed) {
                self.timeouts.idle
            } else {
                self.timeouts.handshake
            };
            let now = c.epoch.elapsed();
            let deadline = Duration::from_millis(c.last_ms.load(Ordering::Relaxed)) + limit;
            if now >= deadline && c.active() == 0 {
                debug!(
                    spoke = c.spoke.load(Ordering::Relaxed),
                    "closing an idle connection"
                );
                return Poll::Ready(());
            }
            // With requests open, look again one period later.
            let next = if now >= deadline {
                now + limit
            } else {
                deadline
            };
            let when = tokio::time::Instant::from_std(c.epoch + next);
            if self.timer.deadline() != when {
                self.timer.as_mut().reset(when);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Limited<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.conn.spoke.store(true, Ordering::Relaxed);
                    this.conn.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // End of stream closes the connection.
            Poll::Pending => this.poll_idle(cx).map(Ok),
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Limited<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<IO: Connected> Connected for Limited<IO> {
    type ConnectInfo = PeerInfo<IO::ConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        PeerInfo {
            inner: self.io.connect_info(),
            conn: self.conn.clone(),
        }
    }
}

/// A listener whose connections are charged to a peer.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static;
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<Self::Io>>;
    /// The peer to charge, or `None` to close the connection (no credentials).
    fn peer(io: &Self::Io) -> Option<PeerKey>;
}

impl Accept for UnixListener {
    type Io = UnixStream;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<UnixStream>> {
        UnixListener::poll_accept(self, cx).map_ok(|(s, _)| s)
    }

    fn peer(io: &UnixStream) -> Option<PeerKey> {
        io.peer_cred().ok().map(|c| PeerKey::Uid(c.uid()))
    }
}

impl Accept for TcpListener {
    type Io = TcpStream;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<TcpStream>> {
        TcpListener::poll_accept(self, cx).map_ok(|(s, _)| s)
    }

    fn peer(io: &TcpStream) -> Option<PeerKey> {
        io.peer_addr().ok().map(|a| PeerKey::Ip(a.ip()))
    }
}

/// The accepted connections of a listener that fit its budget, each passed through
/// `wrap` (another I/O layer, e.g. the :authority rewrite) and then limited, for
/// `serve_with_incoming_shutdown`. Accept errors (out of descriptors, for one) pause
/// accepting for a moment instead of spinning.
pub struct Incoming<L: Accept, F> {
    listener: L,
    limiter: Arc<ConnLimiter>,
    timeouts: Timeouts,
    wrap: F,
    backoff: Option<Pin<Box<Sleep>>>,
}

impl<L: Accept, F> Incoming<L, F> {
    pub fn new(
        listener: L,
        limiter: Arc<ConnLimiter>,
        timeouts: Timeouts,
        wrap: F,
    ) -> Incoming<L, F> {
        Incoming {
            listener,
            limiter,
            timeouts,
            wrap,
            backoff: None,
        }
    }
}

impl<L, F, W> tokio_stream::Stream for Incoming<L, F>
where
    L: Accept + Unpin,
    F: FnMut(L::Io) -> W + Unpin,
    W: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
{
    type Item = std::io::Result<Limited<W>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(b) = &mut this.backoff {
                if b.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.backoff = None;
            }
            match this.listener.poll_accept(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    warn!(error = %e, "accept failed; pausing accepts for 50 ms");
                    this.backoff = Some(Box::pin(tokio::time::sleep(Duration::from_millis(50))));
                }
                Poll::Ready(Ok(io)) => {
                    let Some(key) = L::peer(&io) else {
                        continue;
                    };
                    // Dropping `io` closes a connection over budget right away.
                    if let Ok(permit) = this.limiter.try_admit(key) {
                        let io = (this.wrap)(io);
                        return Poll::Ready(Some(Ok(Limited::new(io, permit, this.timeouts))));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_per_listener_and_per_peer_and_come_back() {
        let l = ConnLimiter::new("test", 3, 2);
        let a = PeerKey::Uid(1);
        let b = PeerKey::Uid(2);
        let a1 = l.try_admit(a.clone()).unwrap();
        let _a2 = l.try_admit(a.clone()).unwrap();
        let e = l.try_admit(a.clone()).err().unwrap();
        assert!(e.contains("uid 1"), "{e}");
        let _b1 = l.try_admit(b.clone()).unwrap();
        let e = l.try_admit(b.clone()).err().unwrap();
        assert!(e.contains("3 connections"), "{e}");
        drop(a1);
        assert_eq!(l.open(), 2);
        let _a3 = l.try_admit(a).unwrap();
    }

    #[tokio::test]
    async fn a_silent_connection_reads_end_of_stream_after_the_handshake_timeout() {
        use tokio::io::AsyncReadExt;
        let (server, _client) = UnixStream::pair().unwrap();
        let l = ConnLimiter::new("test", 1, 1);
        let permit = l.try_admit(PeerKey::Uid(0)).unwrap();
        let mut c = Limited::new(
            server,
            permit,
            Timeouts {
                handshake: Duration::from_millis(50),
                idle: Duration::from_secs(60),
            },
        );
        let t = Instant::now();
        let mut buf = [0u8; 8];
        let n = c.read(&mut buf).await.unwrap();
        assert_eq!(n, 0);
        assert!(t.elapsed() >= Duration::from_millis(50));
        drop(c);
        assert_eq!(l.open(), 0);
    }

    #[tokio::test]
    async fn a_connection_with_a_request_open_is_never_idle() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (server, mut client) = UnixStream::pair().unwrap();
        let l = ConnLimiter::new("test", 1, 1);
        let permit = l.try_admit(PeerKey::Uid(0)).unwrap();
        let timeouts = Timeouts {
            handshake: Duration::from_millis(30),
            idle: Duration::from_millis(30),
        };
        let mut c = Limited::new(server, permit, timeouts);
        client.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(c.read(&mut buf).await.unwrap(), 2);
        c.conn.begin();
        let read = tokio::time::timeout(Duration::from_millis(200), c.read(&mut buf)).await;
        assert!(read.is_err(), "closed while a request was open");
        c.conn.end();
        let t = Instant::now();
        assert_eq!(c.read(&mut buf).await.unwrap(), 0);
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
