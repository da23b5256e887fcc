//! The slot read through PostgreSQL's streaming replication protocol, while PostgreSQL is the
//! primary and SQLite follows it.
//!
//! Why not the SQL functions there: every `pg_logical_slot_peek_binary_changes` call (and every
//! `pg_replication_slot_advance`) starts a decoding context at the slot's *restart* position,
//! which PostgreSQL 15 moves only at a running-transactions record (logged every 15 s), so each
//! call decodes up to 15 s of WAL again: at 2,000 writes/s that measured 10–70 ms of server CPU
//! per call, and a follower polling every 20 ms spent most of a core on it. A replication
//! connection (`replication=database`, `START_REPLICATION … LOGICAL`) decodes each WAL record
//! once and sends a transaction as soon as it commits.
//!
//! Delivery stays at-least-once and applied once: the position is confirmed (a standby status
//! update) only after SQLite committed what was read, and SQLite's mark skips what a reconnect
//! hands out again. The SQL functions remain for the phase switches' drains and while SQLite is
//! the primary (`follow::peek`); a drain finding the slot held by a stream ends that stream
//! (`slot::release`), which reconnects after its back-off.
//!
//! The `postgres` crate does not speak this protocol, so the connection is made here on the
//! `postgres-protocol` crate's message codecs (the same ones the driver uses: SCRAM, md5), over
//! the same settings and TLS as every other connection (`PgConfig::replication_parts`).

use crate::error::{Error, Result};
use crate::pg_connect::{PgConfig, SslMode};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres::config::Host;
use postgres::fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::{backend, frontend};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the server sends once streaming.
#[derive(Debug)]
pub enum Streamed {
    /// One pgoutput message (`lsn`: where it starts in the WAL).
    Data { lsn: u64, data: Bytes },
    /// The server's position: everything before `end` was sent. `reply`: the server wants a
    /// status update now (or it ends the connection after `wal_sender_timeout`).
    Keepalive { end: u64, reply: bool },
}

/// A replication connection streaming the capture slot.
pub struct ReplicationStream {
    io: Transport,
    read: BytesMut,
    write: BytesMut,
    /// When the last status update went out (one is due at least every [`STATUS_INTERVAL`]).
    last_status: Instant,
    /// When the server last sent anything: a stream that hears nothing for [`SILENCE_LIMIT`]
    /// although it asked for a reply is treated as dead (a silent network never errors a read).
    last_heard: Instant,
    confirmed: u64,
    /// The server answered START_REPLICATION with CopyBothResponse.
    streaming: bool,
    /// The socket's read timeout as last set: a streaming step reads many times with the same
    /// wait, and each change would cost a system call.
    read_timeout: Option<Duration>,
    /// What a read fills before it is appended to `read` (kept: zeroing 64 KiB per read showed
    /// in the follower's profile).
    chunk: Box<[u8]>,
}

/// How long the stream may hear nothing although it asked the server to answer.
const SILENCE_LIMIT: Duration = Duration::from_secs(30);

/// A status update at least this often, well inside the default `wal_sender_timeout` (60 s).
const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

impl ReplicationStream {
    /// Connect as a replication client to the database `pg` names and stream `slot` (decoded by
    /// pgoutput for `publication`) from `start` (PostgreSQL starts at the slot's confirmed
    /// position when that is later).
    pub fn start(pg: &PgConfig, slot: &str, publication: &str, start: u64) -> Result<ReplicationStream> {
        let (config, mode, tls) = pg.replication_parts()?;
        let unavailable =
            |what: String| Error::Unavailable(format!("change capture stream ({}): {what}", pg.description));
        let io = connect(config, mode, tls).map_err(|e| unavailable(e.to_string()))?;
        let mut s = ReplicationStream {
            io,
            read: BytesMut::with_capacity(64 << 10),
            write: BytesMut::new(),
            last_status: Instant::now(),
            last_heard: Instant::now(),
            confirmed: start,
            streaming: false,
            read_timeout: None,
            chunk: vec![0u8; 64 << 10].into_boxed_slice(),
        };
        s.startup(config).map_err(|e| match e {
            StreamError::Server(m) => Error::Unavailable(format!(
                "change capture stream ({}): {REFUSED}: {m} (the role needs REPLICATION and pg_hba.conf a \
                 `replication` line for it)",
                pg.description
            )),
            StreamError::Io(e) => unavailable(e.to_string()),
        })?;
        let command = format!(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '1', publication_names '{}')",
            quote_ident(slot),
            super::pgoutput::lsn_text(start),
            quote_ident(publication).replace('\'', "''")
        );
        s.simple(&command).map_err(|e| match e {
            StreamError::Server(m) if m.ends_with(&format!("(SQLSTATE {OBJECT_IN_USE})")) => {
                Error::Unavailable(format!("{SLOT_HELD}: {m}"))
            }
            StreamError::Server(m) => Error::Unavailable(format!("change capture stream: {m}")),
            StreamError::Io(e) => unavailable(e.to_string()),
        })?;
        Ok(s)
    }

    /// The next message, waiting at most `wait`; `None` when none came in time.
    pub fn recv(&mut self, wait: Duration) -> Result<Option<Streamed>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(m) = self.received()? {
                return Ok(Some(m));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            if !self.fill(left).map_err(stream_error)? {
                return Ok(None);
            }
        }
    }

    /// The next message that has already arrived, without waiting: what is buffered, else what
    /// one read finds in the socket now; `None` when nothing more is there. A busy follower lets
    /// a batch's messages queue in the socket and takes them in one go (a wake-up and a read per
    /// message cost more than decoding it).
    pub fn recv_ready(&mut self) -> Result<Option<Streamed>> {
        if let Some(m) = self.received()? {
            return Ok(Some(m));
        }
        if !self.fill_ready().map_err(stream_error)? {
            return Ok(None);
        }
        self.received()
    }

    /// The next whole stream message in the read buffer, if one is there.
    fn received(&mut self) -> Result<Option<Streamed>> {
        while let Some(m) = self.parse().map_err(stream_error)? {
            match m {
                backend::Message::CopyData(body) => {
                    self.last_heard = Instant::now();
                    let mut data = body.into_bytes();
                    if data.is_empty() {
                        return Err(protocol("an empty CopyData message"));
                    }
                    return match data.get_u8() {
                        b'w' if data.len() >= 24 => {
                            let lsn = data.get_u64();
                            let _wal_end = data.get_u64();
                            let _sent_at = data.get_i64();
                            Ok(Some(Streamed::Data { lsn, data }))
                        }
                        b'k' if data.len() >= 17 => {
                            let end = data.get_u64();
                            let _sent_at = data.get_i64();
                            let reply = data.get_u8() == 1;
                            Ok(Some(Streamed::Keepalive { end, reply }))
                        }
                        other => Err(protocol(&format!("an unknown stream message {other:?}"))),
                    };
                }
                backend::Message::ErrorResponse(body) => {
                    return Err(Error::Unavailable(format!("{ENDED}: {}", error_text(&body))))
                }
                backend::Message::CopyDone => return Err(Error::Unavailable(ENDED.into())),
                // Notices and parameter changes carry nothing for the follower.
                _ => continue,
            }
        }
        Ok(None)
    }

    /// Tell PostgreSQL that everything before `lsn` is taken (SQLite committed it): the slot's
    /// confirmed position moves there and the WAL before it may be recycled.
    pub fn confirm(&mut self, lsn: u64) -> Result<()> {
        self.confirmed = self.confirmed.max(lsn);
        self.status(false)
    }

    /// Send the confirmed position again if the server asked for it (`reply`) or one is due; a
    /// due one asks the server to answer, so a dead peer shows as silence past [`SILENCE_LIMIT`].
    pub fn keep_alive(&mut self, reply: bool) -> Result<()> {
        if self.last_heard.elapsed() > SILENCE_LIMIT {
            return Err(Error::Unavailable(format!(
                "change capture stream: PostgreSQL has not answered for {:?} (a silent network?); reconnecting",
                self.last_heard.elapsed()
            )));
        }
        if reply {
            self.status(false)?;
        } else if self.last_status.elapsed() >= STATUS_INTERVAL {
            self.status(true)?;
        }
        Ok(())
    }

    fn status(&mut self, reply: bool) -> Result<()> {
        let now_us = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
            - PG_EPOCH_OFFSET_US;
        let mut body = BytesMut::with_capacity(34);
        body.put_u8(b'r');
        // Written, flushed and applied: SQLite has all three at once.
        for _ in 0..3 {
            body.put_u64(self.confirmed);
        }
        body.put_i64(now_us);
        body.put_u8(u8::from(reply));
        frontend::CopyData::new(body.freeze()).map_err(Error::Io)?.write(&mut self.write);
        self.flush().map_err(stream_error)?;
        self.last_status = Instant::now();
        Ok(())
    }

    fn startup(&mut self, config: &postgres::Config) -> std::result::Result<(), StreamError> {
        let user = config.get_user().unwrap_or("postgres").to_string();
        let db = config.get_dbname().unwrap_or(&user).to_string();
        // The decoding session's settings (`slot::DECODING_SESSION`), as startup parameters: they
        // fix how pgoutput prints values (`decode::sqlite_value` reads them).
        let params = [
            ("user", user.as_str()),
            ("database", db.as_str()),
            ("replication", "database"),
            ("application_name", super::slot::STREAM_APPLICATION),
            ("TimeZone", "UTC"),
            ("DateStyle", "ISO, YMD"),
            ("bytea_output", "hex"),
            ("IntervalStyle", "postgres"),
        ];
        frontend::startup_message(params.iter().copied(), &mut self.write)?;
        self.flush()?;
        let password = config.get_password().unwrap_or_default().to_vec();
        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            match self.next_message()? {
                backend::Message::AuthenticationOk => {}
                backend::Message::AuthenticationCleartextPassword => {
                    frontend::password_message(&password, &mut self.write)?;
                    self.flush()?;
                }
                backend::Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(user.as_bytes(), &password, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.write)?;
                    self.flush()?;
                }
                backend::Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut has_scram = false;
                    while let Some(m) = mechanisms.next()? {
                        has_scram |= m == sasl::SCRAM_SHA_256;
                    }
                    if !has_scram {
                        return Err(StreamError::Server("no supported SASL mechanism offered".into()));
                    }
                    let s = sasl::ScramSha256::new(&password, sasl::ChannelBinding::unsupported());
                    frontend::sasl_initial_response(sasl::SCRAM_SHA_256, s.message(), &mut self.write)?;
                    self.flush()?;
                    scram = Some(s);
                }
                backend::Message::AuthenticationSaslContinue(body) => {
                    let s = scram.as_mut().ok_or_else(|| StreamError::Server("SASL out of order".into()))?;
                    s.update(body.data())?;
                    frontend::sasl_response(s.message(), &mut self.write)?;
                    self.flush()?;
                }
                backend::Message::AuthenticationSaslFinal(body) => {
                    let s = scram.as_mut().ok_or_else(|| StreamError::Server("SASL out of order".into()))?;
                    s.finish(body.data())?;
                }
                backend::Message::ErrorResponse(body) => return Err(StreamError::Server(error_text(&body))),
                backend::Message::ReadyForQuery(_) => return Ok(()),
                // Parameter status, backend key data, notices.
                _ => {}
            }
        }
    }

    /// Send a command and wait for its start: `CopyBothResponse` (streaming) or its end.
    fn simple(&mut self, sql: &str) -> std::result::Result<(), StreamError> {
        frontend::query(sql, &mut self.write)?;
        self.flush()?;
        loop {
            if let Some(m) = self.parse()? {
                if let backend::Message::ErrorResponse(body) = m {
                    return Err(StreamError::Server(error_text(&body)));
                }
                continue;
            }
            if self.streaming {
                return Ok(());
            }
            if !self.fill(SETUP_TIMEOUT)? {
                return Err(StreamError::Io(std::io::Error::new(
                    ErrorKind::TimedOut,
                    format!("no answer to START_REPLICATION within {SETUP_TIMEOUT:?}"),
                )));
            }
        }
    }

    /// The next whole message, waiting as long as the connection's setup allows.
    fn next_message(&mut self) -> std::result::Result<backend::Message, StreamError> {
        loop {
            if let Some(m) = self.parse()? {
                return Ok(m);
            }
            if !self.fill(SETUP_TIMEOUT)? {
                return Err(StreamError::Io(std::io::Error::new(
                    ErrorKind::TimedOut,
                    format!("no answer within {SETUP_TIMEOUT:?}"),
                )));
            }
        }
    }

    fn parse(&mut self) -> std::io::Result<Option<backend::Message>> {
        // CopyBothResponse ('W') is the one message of this protocol the codec does not know:
        // it is taken off here, and only its arrival matters.
        if self.read.first() == Some(&COPY_BOTH_RESPONSE) && self.read.len() >= 5 {
            let len = u32::from_be_bytes([self.read[1], self.read[2], self.read[3], self.read[4]]) as usize;
            if self.read.len() < len + 1 {
                return Ok(None);
            }
            self.read.advance(len + 1);
            self.streaming = true;
            return Ok(None);
        }
        backend::Message::parse(&mut self.read)
    }

    /// Read what arrives within `wait`; `false` when nothing did.
    fn fill(&mut self, wait: Duration) -> std::io::Result<bool> {
        // Whole milliseconds (at least one): the waits of a streaming step repeat, so the
        // timeout is set again only when it changes.
        let wait = Duration::from_millis(wait.as_millis().clamp(1, u128::from(u32::MAX)) as u64);
        if self.read_timeout != Some(wait) {
            self.io.set_read_timeout(wait)?;
            self.read_timeout = Some(wait);
        }
        match self.io.read(&mut self.chunk) {
            Ok(0) => Err(std::io::Error::new(ErrorKind::UnexpectedEof, "PostgreSQL closed the connection")),
            Ok(n) => {
                self.read.extend_from_slice(&self.chunk[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// One read of what has already arrived, without blocking; `false` when nothing had.
    fn fill_ready(&mut self) -> std::io::Result<bool> {
        self.io.set_nonblocking(true)?;
        let filled = self.io.read(&mut self.chunk);
        self.io.set_nonblocking(false)?;
        match filled {
            Ok(0) => Err(std::io::Error::new(ErrorKind::UnexpectedEof, "PostgreSQL closed the connection")),
            Ok(n) => {
                self.read.extend_from_slice(&self.chunk[..n]);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let out = self.write.split();
        self.io.write_all(&out)?;
        self.io.flush()
    }
}

impl Drop for ReplicationStream {
    fn drop(&mut self) {
        // Tell the server at once, so the slot is free for the next reader without waiting for
        // the connection's end to be noticed.
        frontend::terminate(&mut self.write);
        let _ = self.flush();
    }
}

/// The tag of CopyBothResponse.
const COPY_BOTH_RESPONSE: u8 = b'W';

/// PostgreSQL refused the replication connection itself (authentication, pg_hba.conf, no
/// REPLICATION attribute), as opposed to being unreachable: the SQL functions may still serve.
pub fn refused(e: &Error) -> bool {
    matches!(e, Error::Unavailable(m) if m.contains(REFUSED))
}

const REFUSED: &str = "PostgreSQL refused the replication connection";

/// START_REPLICATION found the slot read by another session (SQLSTATE 55006, object_in_use):
/// the caller may end that session (`slot::release`) and start again.
pub fn slot_held(e: &Error) -> bool {
    matches!(e, Error::Unavailable(m) if m.starts_with(SLOT_HELD))
}

const SLOT_HELD: &str = "change capture stream: the slot is held by another session";

/// The server ended a running stream and said so (a phase switch taking the slot to drain it,
/// an administrator, a server shutting down), as opposed to a connection that broke or fell
/// silent: the stream may be started again at once.
pub fn ended_by_server(e: &Error) -> bool {
    matches!(e, Error::Unavailable(m) if m.starts_with(ENDED))
}

const ENDED: &str = "change capture stream: PostgreSQL ended it";
const OBJECT_IN_USE: &str = "55006";

/// How long the connection's setup (TLS, authentication, START_REPLICATION) may wait for a reply.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

enum StreamError {
    Server(String),
    Io(std::io::Error),
}

impl From<std::io::Error> for StreamError {
    fn from(e: std::io::Error) -> Self {
        StreamError::Io(e)
    }
}

fn stream_error(e: std::io::Error) -> Error {
    Error::Unavailable(format!("change capture stream: {e}"))
}

fn protocol(what: &str) -> Error {
    Error::Unavailable(format!("change capture stream: {what} (protocol error)"))
}

fn error_text(body: &backend::ErrorResponseBody) -> String {
    let mut fields = body.fields();
    let (mut code, mut message) = (String::new(), String::new());
    while let Ok(Some(f)) = fields.next() {
        match f.type_() {
            b'C' => code = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            _ => {}
        }
    }
    if code.is_empty() {
        message
    } else {
        format!("{message} (SQLSTATE {code})")
    }
}

/// A double-quoted identifier for a replication command.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The socket, plain or TLS.
enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<native_tls::TlsStream<ReadAhead>>),
}

impl Transport {
    fn set_read_timeout(&self, wait: Duration) -> std::io::Result<()> {
        match self {
            Transport::Tcp(s) => s.set_read_timeout(Some(wait)),
            Transport::Unix(s) => s.set_read_timeout(Some(wait)),
            Transport::Tls(s) => s.get_ref().0.get_ref().set_read_timeout(Some(wait)),
        }
    }

    fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        match self {
            Transport::Tcp(s) => s.set_nonblocking(on),
            Transport::Unix(s) => s.set_nonblocking(on),
            Transport::Tls(s) => s.get_ref().0.get_ref().set_nonblocking(on),
        }
    }
}

/// The TCP socket under TLS, read ahead: the walsender sends each pgoutput message as a TLS
/// record of its own, and OpenSSL reads a record's header and its body with a system call each
/// (no read-ahead through native-tls); read through this buffer, the records that have arrived
/// cost one system call together.
#[derive(Debug)]
struct ReadAhead(std::io::BufReader<TcpStream>);

/// What one system call under TLS may read ahead.
const READ_AHEAD: usize = 64 << 10;

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for ReadAhead {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.get_mut().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.get_mut().flush()
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.read(buf),
            Transport::Unix(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.write(buf),
            Transport::Unix(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Transport::Tcp(s) => s.flush(),
            Transport::Unix(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

/// Open the socket to the first host that answers, with TLS as `mode` says (a Unix socket never
/// carries TLS, as in libpq).
fn connect(
    config: &postgres::Config,
    mode: SslMode,
    tls: Option<native_tls::TlsConnector>,
) -> std::io::Result<Transport> {
    let timeout = config.get_connect_timeout().copied().unwrap_or(SETUP_TIMEOUT);
    let ports = config.get_ports();
    let mut last = std::io::Error::new(ErrorKind::NotFound, "no host to connect to");
    for (i, host) in config.get_hosts().iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let attempt = match host {
            Host::Unix(dir) => UnixStream::connect(dir.join(format!(".s.PGSQL.{port}"))).map(Transport::Unix),
            Host::Tcp(name) => tcp(name, port, timeout).and_then(|s| secure(s, name, mode, tls.as_ref())),
        };
        match attempt {
            Ok(t) => return Ok(t),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn tcp(name: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    use std::net::ToSocketAddrs;
    let mut last = std::io::Error::new(ErrorKind::NotFound, format!("{name} has no address"));
    for addr in (name, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                s.set_nodelay(true)?;
                s.set_write_timeout(Some(SETUP_TIMEOUT))?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Ask for TLS (SSLRequest) unless it is off; `prefer`/`allow` go on in plain text when the
/// server has none, the other modes refuse.
fn secure(
    mut s: TcpStream,
    name: &str,
    mode: SslMode,
    tls: Option<&native_tls::TlsConnector>,
) -> std::io::Result<Transport> {
    let Some(tls) = tls else { return Ok(Transport::Tcp(s)) };
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    s.write_all(&request)?;
    s.set_read_timeout(Some(SETUP_TIMEOUT))?;
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer)?;
    match answer[0] {
        b'S' => tls
            .connect(name, ReadAhead(std::io::BufReader::with_capacity(READ_AHEAD, s)))
            .map(|t| Transport::Tls(Box::new(t)))
            .map_err(|e| std::io::Error::other(format!("TLS: {e}"))),
        b'N' if matches!(mode, SslMode::Allow | SslMode::Prefer) => Ok(Transport::Tcp(s)),
        b'N' => Err(std::io::Error::other(format!(
            "the server does not accept TLS and sslmode={} requires it",
            mode.as_str()
        ))),
        other => Err(std::io::Error::other(format!("unexpected answer {other:?} to the TLS request"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_for_replication_commands() {
        assert_eq!(quote_ident("dw_capture_abc"), "\"dw_capture_abc\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
