//! Connecting to PostgreSQL: [`PgConfig`] from a URL, a libpq `key=value` string or the `PG*`
//! variables; TLS as libpq does it; passwords masked in every message; TCP keepalives; the whole
//! connect bounded by `connect_timeout`, and the reply deadline (`pg_deadline`) on what follows.
//! The rest of the configuration is `config`.
//!
//! # TLS to PostgreSQL
//!
//! The connection string's `sslmode` and `sslrootcert` are honoured as libpq does (falling back to
//! `PGSSLMODE` and `PGSSLROOTCERT`):
//!
//! | sslmode | TLS | server certificate |
//! |---------|-----|--------------------|
//! | `disable` | never | — |
//! | `allow`, `prefer` (default) | when the server offers it | not checked (as libpq), unless a root certificate is given |
//! | `require` | always | not checked, unless a root certificate is given (then as `verify-ca`, as libpq) |
//! | `verify-ca` | always | signed by a root in `sslrootcert` |
//! | `verify-full` | always | signed by a root in `sslrootcert` and issued for the host name |
//!
//! `sslrootcert` is a PEM file (one or more certificates), or `system` for the operating system's
//! roots; without it `~/.postgresql/root.crt` is used when it exists. The file is read at every
//! connect, so a rotated CA is picked up without a restart. Unix-socket connections never use
//! TLS (as libpq). Client certificates (`sslcert`, `sslkey`) are not supported and are refused.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// How long a whole connect may take when the connection string sets no `connect_timeout`: a
/// server answers each step of a connect at once (no statement runs), so seconds of silence mean
/// it will not answer; short, because a pool or the replicator retries only once it gave up.
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How to reach PostgreSQL. Debug never prints the password.
#[derive(Clone)]
pub struct PgConfig {
    inner: postgres::Config,
    tls: TlsSettings,
    /// What the user gave, with any password masked, for messages.
    pub description: String,
}

/// libpq's `sslmode` values (the `postgres` crate's parser knows only disable/prefer/require).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// Treated as `prefer`: the driver cannot try plaintext first, and TLS first is never weaker.
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::Config(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// Where the roots that authenticate the server come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file with one or more CA certificates (only these are trusted).
    File(PathBuf),
    /// The operating system's trust store (`sslrootcert=system`).
    System,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct TlsSettings {
    mode: SslMode,
    root: Option<RootCert>,
    /// Why the libpq variables could not be used (reported by `connect`).
    invalid: Option<String>,
}

/// TLS settings the `postgres` crate's parser refuses; [`split_tls_params`] takes them out.
const TLS_KEYS: &[&str] =
    &["sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir"];

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl PgConfig {
    /// Parse a `postgres://` URL or a libpq key=value string. `sslmode` and `sslrootcert` not
    /// given in it come from `PGSSLMODE` and `PGSSLROOTCERT` in the process environment.
    pub fn from_url(url: &str) -> Result<Self> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::from_url_with_env(url, &env)
    }

    /// [`PgConfig::from_url`] with the environment given rather than read.
    pub fn from_url_with_env(url: &str, env: &HashMap<String, String>) -> Result<Self> {
        let (rest, tls_params) = split_tls_params(url)?;
        let mut inner: postgres::Config = rest.parse().map_err(|e| {
            // "db.internal/app" parses as neither form; say which forms there are, not only
            // the parser's complaint.
            let hint = if !rest.contains("://") && !rest.contains('=') {
                "; it has no scheme: write postgres://user@host:port/dbname (or key=value pairs: host=… dbname=…)"
            } else {
                ""
            };
            Error::Config(format!("PostgreSQL URL is not valid ({}): {e}{hint}", mask_password(url)))
        })?;
        if inner.get_connect_timeout().is_none() {
            inner.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        detect_dead_peers(&mut inner, |name| rest.contains(name));
        let get = |k: &str| tls_params.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        for unsupported in ["sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir"] {
            if get(unsupported).is_some() {
                return Err(Error::Config(format!(
                    "{unsupported} is not supported (client certificates and CRLs are not implemented); \
                     authenticate with a password over sslmode=verify-full"
                )));
            }
        }
        let tls = TlsSettings::resolve(get("sslmode"), get("sslrootcert"), env)?;
        tls.apply(&mut inner);
        let mut description = mask_password(url);
        if get("sslmode").is_none() && tls.mode != SslMode::Prefer {
            description.push_str(&format!(" (sslmode={} from PGSSLMODE)", tls.mode.as_str()));
        }
        Ok(PgConfig { inner, tls, description })
    }

    /// Build from the libpq variables that `pg_virtualenv` sets (`PGSSLMODE` and `PGSSLROOTCERT`
    /// included). `None` without `PGHOST`; a bad `PGSSLMODE` is reported when connecting.
    pub fn from_pg_vars(vars: &HashMap<String, String>) -> Option<Self> {
        let host = vars.get("PGHOST")?;
        let mut inner = postgres::Config::new();
        inner.host(host);
        let port = vars.get("PGPORT").and_then(|p| p.parse().ok()).unwrap_or(5432);
        inner.port(port);
        let user = vars
            .get("PGUSER")
            .cloned()
            .or_else(|| vars.get("USER").cloned())
            .unwrap_or_else(|| "postgres".into());
        inner.user(&user);
        if let Some(pw) = vars.get("PGPASSWORD") {
            inner.password(pw);
        }
        let db = vars.get("PGDATABASE").cloned().unwrap_or_else(|| user.clone());
        inner.dbname(&db);
        inner.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        detect_dead_peers(&mut inner, |_| false);
        let mut description = format!("host={host} port={port} user={user} dbname={db}");
        let tls = match TlsSettings::resolve(None, None, vars) {
            Ok(t) => t,
            // Kept for connect() to report: this constructor has no error to return.
            Err(e) => TlsSettings { mode: SslMode::VerifyFull, root: None, invalid: Some(e.to_string()) },
        };
        if tls.mode != SslMode::Prefer {
            description.push_str(&format!(" sslmode={}", tls.mode.as_str()));
        }
        tls.apply(&mut inner);
        Some(PgConfig { inner, tls, description })
    }

    /// The `sslmode` in effect.
    pub fn ssl_mode(&self) -> SslMode {
        self.tls.mode
    }

    /// The roots that authenticate the server, if any.
    pub fn root_cert(&self) -> Option<&RootCert> {
        self.tls.root.as_ref()
    }

    pub fn postgres_config(&self) -> &postgres::Config {
        &self.inner
    }

    /// The same server with another database name (tests create one database each).
    pub fn with_dbname(&self, dbname: &str) -> Self {
        let mut inner = self.inner.clone();
        inner.dbname(dbname);
        let description = match self.inner.get_dbname() {
            Some(old) => self.description.replace(&format!("dbname={old}"), &format!("dbname={dbname}")),
            None => format!("{} dbname={dbname}", self.description),
        };
        PgConfig { inner, tls: self.tls.clone(), description }
    }

    pub fn dbname(&self) -> Option<&str> {
        self.inner.get_dbname()
    }

    /// The parsed settings (hosts, ports, user, password, database, timeouts) and the TLS to use,
    /// for the one connection the `postgres` crate cannot make: the change capture's replication
    /// stream (`capture::stream`). `None`: no TLS (`sslmode=disable`).
    pub(crate) fn replication_parts(
        &self,
    ) -> Result<(&postgres::Config, SslMode, Option<native_tls::TlsConnector>)> {
        if let Some(why) = &self.tls.invalid {
            return Err(Error::Config(format!("PostgreSQL ({}): {why}", self.description)));
        }
        let tls = match self.tls.mode {
            SslMode::Disable => None,
            _ => Some(self.tls.native_connector(&self.description)?),
        };
        Ok((&self.inner, self.tls.mode, tls))
    }

    /// Open one connection, with TLS as `sslmode` says (see the module documentation), and with
    /// the reply deadline of `pg_deadline.rs`. The whole connect (TCP, TLS, authentication) is
    /// bounded by [`PgConfig::connect_budget`], as libpq bounds it by `connect_timeout`: the start
    /// of a connection runs partly outside the reply deadline (before TLS), and a connect is never
    /// owed a long answer, so a server that holds the socket and says nothing must not hold the
    /// caller for the 30 s a statement may take. It runs on a thread of its own; a connect that
    /// does not finish in time is reported and left to end on its own (its thread and socket live
    /// until the peer closes or resets it: the driver's SSLRequest read has no deadline).
    pub fn connect(&self) -> Result<postgres::Client> {
        let limit = crate::pg_deadline::reply_timeout();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let me = self.clone();
        std::thread::Builder::new()
            .name("dualwrite-pg-connect".into())
            .spawn(move || {
                let _ = tx.send(me.connect_now(limit));
            })
            .map_err(Error::Io)?;
        let budget = self.connect_budget();
        rx.recv_timeout(budget).unwrap_or_else(|_| {
            Err(Error::Unavailable(format!(
                "cannot connect to PostgreSQL ({}): the connection was not set up within {budget:?} \
                 (connect_timeout)",
                self.description
            )))
        })
    }

    /// How long a whole connect may take: the connection string's `connect_timeout` (libpq's
    /// meaning: the connection's whole set-up), [`DEFAULT_CONNECT_TIMEOUT`] when it gives none.
    pub fn connect_budget(&self) -> std::time::Duration {
        self.inner.get_connect_timeout().copied().unwrap_or(DEFAULT_CONNECT_TIMEOUT)
    }

    fn connect_now(&self, deadline: Option<std::time::Duration>) -> Result<postgres::Client> {
        if let Some(why) = &self.tls.invalid {
            return Err(Error::Config(format!("PostgreSQL ({}): {why}", self.description)));
        }
        let unix_only = !self.inner.get_hosts().is_empty()
            && self.inner.get_hosts().iter().all(|h| matches!(h, postgres::config::Host::Unix(_)));
        let connected = if unix_only || self.tls.mode == SslMode::Disable {
            // A Unix socket never carries TLS (libpq ignores sslmode there too).
            let mut plain = self.inner.clone();
            plain.ssl_mode(postgres::config::SslMode::Disable);
            plain.connect(postgres::NoTls)
        } else {
            let tls = self.tls.connector(&self.description)?;
            match deadline {
                Some(limit) => self.inner.connect(crate::pg_deadline::Bounded::new(tls, limit)),
                None => self.inner.connect(tls),
            }
        };
        connected.map_err(|e| {
            let hint = if self.tls.mode.verifies() && is_tls_failure(&e) {
                format!(
                    " (sslmode={}: the server's certificate must be signed by a root in {}{})",
                    self.tls.mode.as_str(),
                    match &self.tls.root {
                        Some(RootCert::File(p)) => p.display().to_string(),
                        Some(RootCert::System) => "the system's trust store".into(),
                        None => "sslrootcert".into(),
                    },
                    if self.tls.mode == SslMode::VerifyFull { " and name this host" } else { "" }
                )
            } else {
                String::new()
            };
            Error::Unavailable(format!(
                "cannot connect to PostgreSQL ({}): {}{hint}",
                self.description,
                pg_message(&e)
            ))
        })
    }
}

impl TlsSettings {
    /// The settings from the connection string's values, else the libpq variables, else the
    /// defaults (`prefer`; `~/.postgresql/root.crt` when it exists).
    fn resolve(
        mode: Option<String>,
        root: Option<String>,
        env: &HashMap<String, String>,
    ) -> Result<TlsSettings> {
        let mode = match mode.or_else(|| env.get("PGSSLMODE").cloned()) {
            Some(m) => SslMode::parse(&m)?,
            None => SslMode::Prefer,
        };
        let root = match root.or_else(|| env.get("PGSSLROOTCERT").cloned()) {
            Some(r) if r == "system" => Some(RootCert::System),
            Some(r) if r.is_empty() => None,
            Some(r) => Some(RootCert::File(PathBuf::from(r))),
            None => env
                .get("HOME")
                .map(|h| Path::new(h).join(".postgresql/root.crt"))
                .filter(|p| p.is_file())
                .map(RootCert::File),
        };
        if mode.verifies() && root.is_none() {
            return Err(Error::Config(format!(
                "sslmode={} needs the CA that signed the server's certificate: give sslrootcert=/path/to/ca.pem \
                 (or PGSSLROOTCERT, or sslrootcert=system for the system's roots)",
                mode.as_str()
            )));
        }
        Ok(TlsSettings { mode, root, invalid: None })
    }

    /// Tell the driver whether TLS is optional or required.
    fn apply(&self, inner: &mut postgres::Config) {
        use postgres::config::SslMode as Driver;
        inner.ssl_mode(match self.mode {
            SslMode::Disable => Driver::Disable,
            SslMode::Allow | SslMode::Prefer => Driver::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Driver::Require,
        });
    }

    /// A TLS connector that checks what the mode asks for. Built at every connect, so a replaced
    /// CA file takes effect at the next connection.
    fn connector(&self, description: &str) -> Result<postgres_native_tls::MakeTlsConnector> {
        Ok(postgres_native_tls::MakeTlsConnector::new(self.native_connector(description)?))
    }

    /// The TLS connector itself, for connections the `postgres` crate does not make (the change
    /// capture's replication stream, `capture::stream`).
    fn native_connector(&self, description: &str) -> Result<native_tls::TlsConnector> {
        let mut b = native_tls::TlsConnector::builder();
        b.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
        // libpq: with a root certificate, require behaves as verify-ca.
        let verify_chain = self.mode.verifies() || self.root.is_some();
        if !verify_chain {
            // prefer/require without a root: encryption without authentication, as libpq. No
            // root is consulted then, so the system's trust store is not loaded either: parsing
            // it cost ~30 ms of CPU per connection (a pool's burst of connects stalled writes).
            b.danger_accept_invalid_certs(true);
            b.disable_built_in_roots(true);
        }
        if self.mode != SslMode::VerifyFull {
            b.danger_accept_invalid_hostnames(true);
        }
        if let Some(RootCert::File(path)) = &self.root {
            let shown = path.display();
            let pem = std::fs::read(path).map_err(|e| {
                Error::Config(format!("sslrootcert {shown}: cannot read it ({description}): {e}"))
            })?;
            let certs = native_tls::Certificate::stack_from_pem(&pem).map_err(|e| {
                Error::Config(format!("sslrootcert {shown}: not a PEM certificate file: {e}"))
            })?;
            if certs.is_empty() {
                return Err(Error::Config(format!("sslrootcert {shown}: holds no certificate")));
            }
            // Only the given roots are trusted, as libpq does with sslrootcert.
            b.disable_built_in_roots(true);
            for c in certs {
                b.add_root_certificate(c);
            }
        }
        b.build().map_err(|e| Error::Config(format!("cannot set up TLS for PostgreSQL: {e}")))
    }
}

fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                // Some layers repeat their source's text in their own: show it once.
                let text = inner.to_string();
                if !s.contains(&text) {
                    s.push_str(": ");
                    s.push_str(&text);
                }
                src = inner.source();
            }
            s
        }
    }
}

/// Whether a connection failed in the TLS layer (as opposed to refused, timed out, bad password).
fn is_tls_failure(e: &postgres::Error) -> bool {
    e.as_db_error().is_none() && {
        let text = pg_message(e).to_ascii_lowercase();
        text.contains("tls") || text.contains("ssl") || text.contains("certificate")
    }
}

/// One `key=value` pair of a libpq connection string, with where it stands in the string.
struct Pair {
    key: String,
    value: String,
    span: std::ops::Range<usize>,
}

/// The pairs of a libpq `key=value` string (values may be single-quoted with backslash escapes);
/// `None` when it is not one (the driver's parser then names the problem).
fn kv_pairs(s: &str) -> Option<Vec<Pair>> {
    fn skip_ws(chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>) {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    }
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    loop {
        skip_ws(&mut chars);
        let Some(&(start, _)) = chars.peek() else { return Some(out) };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        skip_ws(&mut chars);
        chars.next_if(|(_, c)| *c == '=')?;
        skip_ws(&mut chars);
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next()? {
                    (_, '\'') => break,
                    (_, '\\') => value.push(chars.next()?.1),
                    (_, c) => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next()?.1);
                } else {
                    value.push(c);
                }
            }
        }
        let end = chars.peek().map_or(s.len(), |(i, _)| *i);
        out.push(Pair { key, value, span: start..end });
    }
}

fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// Take the TLS settings out of a connection string (URL query parameters or libpq `key=value`
/// pairs), since the `postgres` crate's parser refuses verify-ca, verify-full and sslrootcert.
/// Returns the string without them and the (key, decoded value) pairs taken.
fn split_tls_params(url: &str) -> Result<(String, Vec<(String, String)>)> {
    let mut taken = Vec::new();
    if is_url(url) {
        let Some((base, query)) = url.split_once('?') else { return Ok((url.to_string(), taken)) };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(k)?;
            if TLS_KEYS.contains(&key.as_str()) {
                taken.push((key, percent_decode(v)?));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        return Ok((rest, taken));
    }
    let Some(pairs) = kv_pairs(url) else { return Ok((url.to_string(), taken)) };
    let mut kept = Vec::new();
    for p in pairs {
        if TLS_KEYS.contains(&p.key.as_str()) {
            taken.push((p.key, p.value));
        } else {
            kept.push(url[p.span].trim());
        }
    }
    Ok((kept.join(" "), taken))
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(|| {
                Error::Config("PostgreSQL URL: a %-escape is not followed by two hex digits".into())
            })?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::Config("PostgreSQL URL: a parameter is not UTF-8".into()))
}

/// The connection string with every password replaced by `***`, for messages and logs: the
/// `user:secret@` of a URL, a `password=` query parameter, a `password=` pair (quoted or not).
fn mask_password(url: &str) -> String {
    const SECRET_KEYS: [&str; 2] = ["password", "sslpassword"];
    if let Some((scheme, rest)) = url.split_once("://") {
        let mut out = format!("{scheme}://");
        // The userinfo ends at an '@'; a raw password may itself hold '/', '?' or '@', so mask up
        // to the last '@' anywhere: masking too much beats printing a password.
        let rest = match rest.rfind('@') {
            Some(at) => {
                match rest[..at].split_once(':') {
                    Some((user, _)) => out.push_str(&format!("{user}:***@")),
                    None => out.push_str(&rest[..=at]),
                }
                &rest[at + 1..]
            }
            None => rest,
        };
        let (path, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        out.push_str(path);
        if let Some(q) = query {
            let masked: Vec<String> = q
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if percent_decode(k).is_ok_and(|k| SECRET_KEYS.contains(&k.as_str())) => {
                        format!("{k}=***")
                    }
                    _ => p.to_string(),
                })
                .collect();
            out.push('?');
            out.push_str(&masked.join("&"));
        }
        return out;
    }
    match kv_pairs(url) {
        Some(pairs) => pairs
            .iter()
            .map(|p| {
                if SECRET_KEYS.contains(&p.key.as_str()) {
                    format!("{}=***", p.key)
                } else {
                    url[p.span.clone()].trim().to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        // Not parseable: show none of it rather than risk showing a password.
        None => "(unparseable connection string)".into(),
    }
}

/// A PostgreSQL that vanishes without closing the connection (a network partition, a host
/// powered off) must be noticed in seconds, not after the kernel's retransmission timeout (about
/// 15 minutes): a replicator would stall that long, and while PostgreSQL is the primary a write
/// would hold SQLite's write lock that long. TCP keepalives after 10 s idle (3 probes 5 s apart)
/// and a 30 s limit on unacknowledged data. Settings the URL gives itself (`keepalives_idle`,
/// `tcp_user_timeout`, ...) win; note that the postgres crate reads `tcp_user_timeout` in seconds,
/// where libpq reads milliseconds.
fn detect_dead_peers(inner: &mut postgres::Config, url_sets: impl Fn(&str) -> bool) {
    use std::time::Duration;
    if !url_sets("keepalives") {
        inner.keepalives(true);
        inner.keepalives_idle(Duration::from_secs(10));
        inner.keepalives_interval(Duration::from_secs(5));
        inner.keepalives_retries(3);
    }
    if !url_sets("tcp_user_timeout") && inner.get_tcp_user_timeout().is_none() {
        inner.tcp_user_timeout(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_without_a_scheme_is_told_so_and_its_password_stays_hidden() {
        for url in ["db.internal/app", "dualwrite:s3cret@db.internal:5432/app"] {
            let e = PgConfig::from_url(url).unwrap_err().to_string();
            assert!(e.contains("it has no scheme: write postgres://"), "{e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
        // A malformed key=value string is not told about schemes.
        let e = PgConfig::from_url("host=db port=x").unwrap_err().to_string();
        assert!(!e.contains("no scheme"), "{e}");
    }

    #[test]
    fn a_vanished_server_is_noticed_by_tcp_unless_the_url_says_otherwise() {
        let c = PgConfig::from_url("host=db user=u dbname=d").unwrap();
        assert_eq!(c.postgres_config().get_tcp_user_timeout(), Some(&std::time::Duration::from_secs(30)));
        assert_eq!(c.postgres_config().get_keepalives_idle(), std::time::Duration::from_secs(10));
        let own =
            PgConfig::from_url("host=db user=u dbname=d tcp_user_timeout=5 keepalives_idle=60").unwrap();
        assert_eq!(own.postgres_config().get_tcp_user_timeout(), Some(&std::time::Duration::from_secs(5)));
        assert_eq!(own.postgres_config().get_keepalives_idle(), std::time::Duration::from_secs(60));
    }

    #[test]
    fn url_password_is_masked() {
        assert_eq!(mask_password("postgres://bob:hunter2@db:5432/x"), "postgres://bob:***@db:5432/x");
        assert_eq!(mask_password("postgres://bob:pa/ss@db/x"), "postgres://bob:***@db/x");
        assert_eq!(
            mask_password("postgres://bob:pa?ss@db/x?sslmode=require"),
            "postgres://bob:***@db/x?sslmode=require"
        );
        assert_eq!(mask_password("host=db password=hunter2 user=bob"), "host=db password=*** user=bob");
    }

    /// Regression: a quoted password with a space, a password in the URL's query and an '@' in
    /// the URL's password used to show (part of) the password in messages.
    #[test]
    fn every_password_form_is_masked() {
        for (given, shown) in [
            ("host=db password='hunter 2' user=bob", "host=db password=*** user=bob"),
            ("host=db password = 'it\\'s' user=bob", "host=db password=*** user=bob"),
            (
                "postgres://bob@db/x?password=hunter2&sslmode=require",
                "postgres://bob@db/x?password=***&sslmode=require",
            ),
            ("postgres://bob:hun@ter2@db/x", "postgres://bob:***@db/x"),
            ("host=db password='unterminated", "(unparseable connection string)"),
        ] {
            let masked = mask_password(given);
            assert_eq!(masked, shown);
            assert!(!masked.contains("hunter") && !masked.contains("ter2"), "{masked}");
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn tls_settings_come_out_of_both_url_forms() {
        let (rest, taken) = split_tls_params(
            "postgres://u:p@h:5433/d?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@h:5433/d?application_name=x");
        assert_eq!(
            taken,
            vec![("sslmode".into(), "verify-full".into()), ("sslrootcert".into(), "/tmp/ca.pem".into())]
        );
        let (rest, taken) =
            split_tls_params("host=h sslmode=verify-ca  sslrootcert='/a dir/ca.pem' password='x y'").unwrap();
        assert_eq!(rest, "host=h password='x y'");
        assert_eq!(taken[1], ("sslrootcert".into(), "/a dir/ca.pem".into()));

        let c = PgConfig::from_url_with_env(
            "postgres://u@localhost/d?sslmode=verify-full&sslrootcert=/tmp/ca.pem",
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(c.ssl_mode(), SslMode::VerifyFull);
        assert_eq!(c.root_cert(), Some(&RootCert::File("/tmp/ca.pem".into())));
        assert_eq!(c.postgres_config().get_ssl_mode(), postgres::config::SslMode::Require);
        // The driver's defaults stay when nothing is said.
        let c = PgConfig::from_url_with_env("host=localhost user=u", &HashMap::new()).unwrap();
        assert_eq!(c.ssl_mode(), SslMode::Prefer);
        assert_eq!(c.root_cert(), None);
    }

    #[test]
    fn libpq_variables_fill_in_tls_settings() {
        let e = env(&[("PGSSLMODE", "verify-ca"), ("PGSSLROOTCERT", "/etc/ca.pem")]);
        let c = PgConfig::from_url_with_env("host=localhost", &e).unwrap();
        assert_eq!(
            (c.ssl_mode(), c.root_cert()),
            (SslMode::VerifyCa, Some(&RootCert::File("/etc/ca.pem".into())))
        );
        // The string wins over the variables.
        let c = PgConfig::from_url_with_env("host=localhost sslmode=disable", &e).unwrap();
        assert_eq!(c.ssl_mode(), SslMode::Disable);
        let vars = env(&[("PGHOST", "db"), ("PGSSLMODE", "require"), ("PGSSLROOTCERT", "system")]);
        let c = PgConfig::from_pg_vars(&vars).unwrap();
        assert_eq!((c.ssl_mode(), c.root_cert()), (SslMode::Require, Some(&RootCert::System)));
        assert!(c.description.contains("sslmode=require"), "{}", c.description);
    }

    #[test]
    fn unusable_tls_settings_are_config_errors() {
        let none = HashMap::new();
        for (url, says) in [
            ("host=h sslmode=verify-full", "sslrootcert"),
            ("postgres://h/d?sslmode=verify-ca", "sslrootcert"),
            ("host=h sslmode=bogus", "bogus"),
            ("host=h sslmode=require sslcert=/c.pem", "sslcert is not supported"),
        ] {
            match PgConfig::from_url_with_env(url, &none) {
                Err(Error::Config(m)) => assert!(m.contains(says), "{url}: {m}"),
                other => panic!("{url}: expected a Config error, got {other:?}"),
            }
        }
        let c = PgConfig::from_pg_vars(&env(&[("PGHOST", "db"), ("PGSSLMODE", "verify-full")])).unwrap();
        match c.connect() {
            Err(Error::Config(m)) => assert!(m.contains("sslrootcert"), "{m}"),
            other => panic!("expected a Config error, got {:?}", other.map(|_| ())),
        }
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let url = format!("host=127.0.0.1 port=1 sslmode=verify-full sslrootcert={}", not_pem.display());
        match PgConfig::from_url_with_env(&url, &none).unwrap().connect() {
            Err(Error::Config(m)) => assert!(m.contains("ca.pem"), "{m}"),
            other => panic!("expected a Config error, got {:?}", other.map(|_| ())),
        }
    }
}
