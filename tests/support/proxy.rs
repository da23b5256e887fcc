//! A loopback TCP proxy for fault tests: the bridge talks to PostgreSQL through it, and the test
//! can
//! - take PostgreSQL "down" (every new connection is accepted and closed at once, every open one
//!   is cut) and bring it back (`down`, `up`);
//! - cut all open connections while it stays up (`cut_all`);
//! - add latency to every chunk of bytes in both directions (`set_latency`);
//! - black-hole the traffic (`black_hole`): connections stay open, nothing is forwarded either
//!   way, no FIN and no RST is sent, and new connections are accepted and held the same way (the
//!   server is never contacted);
//! - restore (`restore`): every mode off, new connections forwarded at once.
//!
//! A black-holed connection stays silent after `restore` too, as one does whose peer state was
//! lost during a partition: nothing will ever come back on it, and the server side never learns
//! the client gave up (its backend, and any transaction it had open, lives on). Only a timeout of
//! the client's notices it — or `cut_all` (or dropping the proxy), which stands for the RST that
//! would eventually arrive. On loopback the proxy's own kernel still ACKs what the client sends
//! and answers TCP keepalive probes: this models a peer that is alive at the TCP level and silent
//! above it (a hung server or middlebox), which only an application-level deadline detects; a
//! black hole that drops packets (which TCP keepalives and `tcp_user_timeout` would detect) needs
//! a packet filter, which these machines do not have.
//!
//! std::net and threads only: one accept thread, and per connection and direction a reader and a
//! writer thread (the writer holds each chunk until its latency has passed, so latency delays
//! without serialising round trips). The upstream is the real server's TCP address or its Unix
//! socket (PGHOST may be either under pg_virtualenv).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where the real server listens.
#[derive(Clone, Debug)]
pub enum Upstream {
    Tcp(String, u16),
    /// The socket file itself (`<dir>/.s.PGSQL.<port>`).
    Unix(PathBuf),
}

impl Upstream {
    /// The server a `postgres::Config` points at (its first host and port).
    pub fn of(config: &postgres::Config) -> Upstream {
        let port = config.get_ports().first().copied().unwrap_or(5432);
        match config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => Upstream::Tcp(h.clone(), port),
            Some(postgres::config::Host::Unix(dir)) => Upstream::Unix(dir.join(format!(".s.PGSQL.{port}"))),
            None => Upstream::Tcp("localhost".into(), port),
        }
    }

    fn connect(&self) -> io::Result<Stream> {
        match self {
            Upstream::Tcp(h, p) => {
                let s = TcpStream::connect((h.as_str(), *p))?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            Upstream::Unix(p) => Ok(Stream::Unix(UnixStream::connect(p)?)),
        }
    }
}

/// One end of a proxied connection.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// Counters, for the test's summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyStats {
    /// Connections forwarded to the server.
    pub forwarded: u64,
    /// Connections accepted and closed at once while down.
    pub refused: u64,
    /// Open connections cut by `cut_all` or `down`.
    pub cut: u64,
    /// Connections black-holed: open when `black_hole` was called, or accepted during one.
    pub held: u64,
    /// Bytes the black hole swallowed (read from either side, never forwarded).
    pub swallowed_bytes: u64,
}

/// An open connection: clones of both sides, used only to shut them down, and whether it is
/// black-holed.
struct Conn {
    id: u64,
    client: Stream,
    /// `None` for a connection accepted during a black hole (the server was never contacted).
    server: Option<Stream>,
    held: Arc<AtomicBool>,
}

struct Shared {
    upstream: Upstream,
    down: AtomicBool,
    black_hole: AtomicBool,
    /// Added to every chunk in each direction, in microseconds.
    latency_us: AtomicU64,
    stopping: AtomicBool,
    next_id: AtomicU64,
    open: Mutex<Vec<Conn>>,
    forwarded: AtomicU64,
    refused: AtomicU64,
    cut: AtomicU64,
    held: AtomicU64,
    swallowed: AtomicU64,
}

impl Shared {
    fn open(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Shut both sides of connection `id` and forget it (a no-op once cut).
    fn close(&self, id: u64) {
        let gone: Vec<Conn> = {
            let mut open = self.open();
            let (gone, kept) = std::mem::take(&mut *open).into_iter().partition(|c| c.id == id);
            *open = kept;
            gone
        };
        for c in gone {
            c.client.shutdown();
            if let Some(s) = &c.server {
                s.shutdown();
            }
        }
    }

    fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_us.load(Ordering::SeqCst))
    }
}

pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listen on 127.0.0.1 (a free port) and forward to `upstream`. Starts up, no fault.
    pub fn start(upstream: Upstream) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            upstream,
            down: AtomicBool::new(false),
            black_hole: AtomicBool::new(false),
            latency_us: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            open: Mutex::new(Vec::new()),
            forwarded: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            cut: AtomicU64::new(0),
            held: AtomicU64::new(0),
            swallowed: AtomicU64::new(0),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("fault-proxy-accept".into())
            .spawn(move || accept_loop(listener, s))
            .expect("spawn the proxy");
        Proxy { port, shared, accept: Some(accept) }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// PostgreSQL "down": cut every open connection; new ones are accepted and closed at once
    /// (so a client sees a fast failure, as with a server that is restarting).
    pub fn down(&self) {
        self.shared.down.store(true, Ordering::SeqCst);
        self.cut_all();
    }

    /// Forward new connections again (after `down`).
    pub fn up(&self) {
        self.shared.down.store(false, Ordering::SeqCst);
    }

    /// Hold every chunk of bytes `each_way` before forwarding it, in both directions (a round
    /// trip takes `2 × each_way` longer), on open and new connections. Zero turns it off.
    pub fn set_latency(&self, each_way: Duration) {
        self.shared.latency_us.store(each_way.as_micros() as u64, Ordering::SeqCst);
    }

    /// Black-hole the traffic: every open connection stops forwarding in both directions (bytes
    /// still queued for their latency are dropped too), without closing anything; new
    /// connections are accepted and held the same way. Returns how many open connections it
    /// caught. They stay silent for good (see the module doc); `cut_all` ends them.
    pub fn black_hole(&self) -> usize {
        let open = self.shared.open();
        // Set under the lock, so a connection being registered is either caught here or sees
        // the flag (`register`).
        self.shared.black_hole.store(true, Ordering::SeqCst);
        let mut caught = 0;
        for c in open.iter() {
            if !c.held.swap(true, Ordering::SeqCst) {
                caught += 1;
            }
        }
        self.shared.held.fetch_add(caught as u64, Ordering::SeqCst);
        caught
    }

    /// Every fault mode off (black hole, latency, down): new connections are forwarded at once.
    /// Connections already black-holed stay silent until `cut_all`.
    pub fn restore(&self) {
        self.shared.black_hole.store(false, Ordering::SeqCst);
        self.shared.latency_us.store(0, Ordering::SeqCst);
        self.shared.down.store(false, Ordering::SeqCst);
    }

    /// Cut every open connection, black-holed ones included (both directions, both sides);
    /// returns how many there were.
    pub fn cut_all(&self) -> usize {
        let conns = std::mem::take(&mut *self.shared.open());
        for c in &conns {
            c.client.shutdown();
            if let Some(s) = &c.server {
                s.shutdown();
            }
        }
        self.shared.cut.fetch_add(conns.len() as u64, Ordering::SeqCst);
        conns.len()
    }

    /// Open connections, black-holed ones included.
    pub fn open_connections(&self) -> usize {
        self.shared.open().len()
    }

    /// Open connections that are black-holed.
    pub fn held_connections(&self) -> usize {
        self.shared.open().iter().filter(|c| c.held.load(Ordering::SeqCst)).count()
    }

    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            forwarded: self.shared.forwarded.load(Ordering::SeqCst),
            refused: self.shared.refused.load(Ordering::SeqCst),
            cut: self.shared.cut.load(Ordering::SeqCst),
            held: self.shared.held.load(Ordering::SeqCst),
            swallowed_bytes: self.shared.swallowed.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.cut_all();
        // Wake the blocking accept.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        if shared.down.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let _ = client.set_nodelay(true);
        let result = if shared.black_hole.load(Ordering::SeqCst) {
            hold(&shared, Stream::Tcp(client))
        } else {
            match shared.upstream.connect() {
                Ok(server) => spawn_pumps(&shared, Stream::Tcp(client), server),
                Err(_) => {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
            }
        };
        if let Err(e) = result {
            eprintln!("fault proxy: cannot take a connection: {e}");
        }
    }
}

/// Register a connection before any byte flows, so a cut or a black hole never misses it.
/// `None` when the proxy went down meanwhile (the connection is then closed).
fn register(
    shared: &Shared,
    client: &Stream,
    server: Option<&Stream>,
) -> io::Result<Option<(u64, Arc<AtomicBool>)>> {
    let mut open = shared.open();
    // Checked under the lock, so a connection accepted just before `down` is cut too.
    if shared.down.load(Ordering::SeqCst) {
        client.shutdown();
        if let Some(s) = server {
            s.shutdown();
        }
        return Ok(None);
    }
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let held = Arc::new(AtomicBool::new(shared.black_hole.load(Ordering::SeqCst)));
    if held.load(Ordering::SeqCst) {
        shared.held.fetch_add(1, Ordering::SeqCst);
    }
    open.push(Conn {
        id,
        client: client.try_clone()?,
        server: server.map(Stream::try_clone).transpose()?,
        held: held.clone(),
    });
    Ok(Some((id, held)))
}

/// A connection accepted during a black hole: kept open, read and ignored, never answered.
fn hold(shared: &Arc<Shared>, client: Stream) -> io::Result<()> {
    if register(shared, &client, None)?.is_none() {
        return Ok(());
    }
    let sh = shared.clone();
    std::thread::Builder::new().name("fault-proxy-held".into()).spawn(move || swallow(client, &sh))?;
    Ok(())
}

/// Read and drop until the other end or a cut closes the socket; closes nothing itself.
fn swallow(mut from: Stream, shared: &Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        shared.swallowed.fetch_add(n as u64, Ordering::SeqCst);
    }
}

fn spawn_pumps(shared: &Arc<Shared>, client: Stream, server: Stream) -> io::Result<()> {
    let Some((id, held)) = register(shared, &client, Some(&server))? else { return Ok(()) };
    shared.forwarded.fetch_add(1, Ordering::SeqCst);
    let (c2, s2) = (client.try_clone()?, server.try_clone()?);
    pump(shared, "up", client, server, id, held.clone())?;
    pump(shared, "down", s2, c2, id, held)?;
    Ok(())
}

/// One direction of a connection: a reader thread stamps each chunk with the instant it may be
/// forwarded (now + latency) and queues it; a writer thread forwards it then. When the reader
/// sees the end, the writer forwards what is queued and closes both sides (so the other
/// direction ends too). A black-holed connection forwards nothing and closes nothing.
fn pump(
    shared: &Arc<Shared>,
    dir: &str,
    mut from: Stream,
    mut to: Stream,
    id: u64,
    held: Arc<AtomicBool>,
) -> io::Result<()> {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let sh = shared.clone();
    let held_r = held.clone();
    std::thread::Builder::new().name(format!("fault-proxy-{dir}-read")).spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if held_r.load(Ordering::SeqCst) {
                        sh.swallowed.fetch_add(n as u64, Ordering::SeqCst);
                        continue;
                    }
                    if tx.send((Instant::now() + sh.latency(), buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    })?;
    let sh = shared.clone();
    std::thread::Builder::new().name(format!("fault-proxy-{dir}-write")).spawn(move || {
        for (due, bytes) in rx {
            let wait = due.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            if held.load(Ordering::SeqCst) {
                sh.swallowed.fetch_add(bytes.len() as u64, Ordering::SeqCst);
                continue;
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        if held.load(Ordering::SeqCst) {
            // Silent for good: no FIN either way; the clones in `open` keep both sockets open
            // until `cut_all` or the proxy's drop.
            return;
        }
        sh.close(id);
    })?;
    Ok(())
}
