//! A loopback TCP proxy for fault tests: the bridge talks to PostgreSQL through it, and the test
//! can take PostgreSQL "down" (every new connection is accepted and closed at once, every open
//! one is cut), cut all open connections while it stays up, and bring it back.
//!
//! std::net and threads only: one accept thread, two pump threads per connection. The upstream is
//! the real server's TCP address or its Unix socket (PGHOST may be either under pg_virtualenv).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

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
}

struct Shared {
    upstream: Upstream,
    down: AtomicBool,
    stopping: AtomicBool,
    next_id: AtomicU64,
    /// Open connections: id -> (client side, server side), clones used only to shut them down.
    open: Mutex<Vec<(u64, Stream, Stream)>>,
    forwarded: AtomicU64,
    refused: AtomicU64,
    cut: AtomicU64,
}

impl Shared {
    fn forget(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|(i, _, _)| *i != id);
    }
}

pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listen on 127.0.0.1 (a free port) and forward to `upstream`. Starts up.
    pub fn start(upstream: Upstream) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            upstream,
            down: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            open: Mutex::new(Vec::new()),
            forwarded: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            cut: AtomicU64::new(0),
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

    /// Forward new connections again.
    pub fn up(&self) {
        self.shared.down.store(false, Ordering::SeqCst);
    }

    /// Cut every open connection (both directions); returns how many there were.
    pub fn cut_all(&self) -> usize {
        let conns = std::mem::take(&mut *self.shared.open.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, client, server) in &conns {
            client.shutdown();
            server.shutdown();
        }
        self.shared.cut.fetch_add(conns.len() as u64, Ordering::SeqCst);
        conns.len()
    }

    pub fn open_connections(&self) -> usize {
        self.shared.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            forwarded: self.shared.forwarded.load(Ordering::SeqCst),
            refused: self.shared.refused.load(Ordering::SeqCst),
            cut: self.shared.cut.load(Ordering::SeqCst),
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
        let server = match shared.upstream.connect() {
            Ok(s) => s,
            Err(_) => {
                let _ = client.shutdown(Shutdown::Both);
                continue;
            }
        };
        if let Err(e) = spawn_pumps(&shared, Stream::Tcp(client), server) {
            eprintln!("fault proxy: cannot forward a connection: {e}");
        }
    }
}

fn spawn_pumps(shared: &Arc<Shared>, client: Stream, server: Stream) -> io::Result<()> {
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    {
        let mut open = shared.open.lock().unwrap_or_else(|p| p.into_inner());
        // Registered before any byte flows, so a cut never misses a connection; checked under
        // the lock so a connection accepted just before `down` is cut too.
        if shared.down.load(Ordering::SeqCst) {
            client.shutdown();
            server.shutdown();
            return Ok(());
        }
        open.push((id, client.try_clone()?, server.try_clone()?));
    }
    shared.forwarded.fetch_add(1, Ordering::SeqCst);
    let (c2, s2) = (client.try_clone()?, server.try_clone()?);
    let sh = shared.clone();
    std::thread::Builder::new().name("fault-proxy-up".into()).spawn(move || pump(client, server, id, sh))?;
    let sh = shared.clone();
    std::thread::Builder::new().name("fault-proxy-down".into()).spawn(move || pump(s2, c2, id, sh))?;
    Ok(())
}

/// Copy `from` to `to` until either side ends, then close both (the other pump then ends too).
fn pump(mut from: Stream, mut to: Stream, id: u64, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    from.shutdown();
    to.shutdown();
    shared.forget(id);
}
