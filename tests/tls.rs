//! TLS to PostgreSQL: `sslmode=require`, `verify-ca` and `verify-full` with a CA file, against the
//! test cluster switched to a certificate made here (a CA of our own and a server certificate
//! for `localhost`). Each test proves from the server's side (`pg_stat_ssl`) that its connection
//! is encrypted, and a wrong CA or a wrong host name is refused with a clear error.
//!
//! Needs a local PostgreSQL whose settings the test user may change (ALTER SYSTEM: a superuser)
//! and whose files it can write (the server must read the certificate and key): the
//! `pg_virtualenv` cluster of `scripts/test`. Alone:
//! `pg_virtualenv -t -v 15 cargo test --test tls`.

mod common;

use dualwrite::{Bridge, BridgeOptions, Config, Error, KeySource, PgConfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tests change one server-wide setting: one at a time.
static SERVER_SSL: Mutex<()> = Mutex::new(());

/// A CA, and a server certificate it signed for `localhost` only (not 127.0.0.1, so connecting
/// by address tells verify-full from verify-ca).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    fn other_ca_pem(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }
    fn server_crt(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }
    fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// Make the certificates in a directory the server (user postgres) can read; the key belongs to
/// the owner of the data directory, mode 0600, as PostgreSQL requires.
fn make_pki(data_dir_owner: u32) -> Pki {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let pki = Pki { dir };

    let ca = new_ca("dualwrite test CA");
    let other = new_ca("some other CA");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();

    std::fs::write(pki.ca_pem(), ca.pem()).unwrap();
    std::fs::write(pki.other_ca_pem(), other.pem()).unwrap();
    std::fs::write(pki.server_crt(), cert.pem()).unwrap();
    std::fs::set_permissions(pki.server_crt(), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(pki.server_key(), key.serialize_pem()).unwrap();
    std::fs::set_permissions(pki.server_key(), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(pki.server_key(), Some(data_dir_owner), None)
        .expect("give the key file to the server's user (run the tests as root or as that user)");
    pki
}

/// The test cluster serving our certificate for as long as this lives; the previous certificate
/// comes back on drop.
struct SslServer {
    admin: PgConfig,
    pki: Pki,
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

impl SslServer {
    fn enable() -> SslServer {
        let guard = SERVER_SSL.lock().unwrap_or_else(|p| p.into_inner());
        let admin = common::server();
        let mut c = admin.connect().unwrap_or_else(|e| panic!("{e}\n{}", common::NO_PG));
        let data_dir: String = c.query_one("SHOW data_directory", &[]).unwrap().get(0);
        let owner = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata(&data_dir).expect("the test server runs on this machine"),
        );
        let pki = make_pki(owner);
        // One statement at a time: ALTER SYSTEM cannot run in the implicit transaction of a batch.
        for sql in [
            "ALTER SYSTEM SET ssl = on".to_string(),
            format!("ALTER SYSTEM SET ssl_cert_file = '{}'", pki.server_crt().display()),
            format!("ALTER SYSTEM SET ssl_key_file = '{}'", pki.server_key().display()),
            "SELECT pg_reload_conf()".to_string(),
        ] {
            c.batch_execute(&sql).unwrap_or_else(|e| {
                panic!("{sql}: {e} (ALTER SYSTEM needs a superuser, as in pg_virtualenv)")
            });
        }
        let server = SslServer { admin, pki, _one_at_a_time: guard };
        // The reload is asynchronous: wait until a new connection is served with our certificate.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match server.pg("localhost", "verify-full", &server.pki.ca_pem()).connect() {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    panic!("the server did not take the new certificate: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        server
    }

    /// A libpq key=value string to the test server at `host` with TLS settings.
    fn url(&self, host: &str, tls: &str) -> String {
        let c = self.admin.postgres_config();
        let mut s = format!(
            "host={host} port={} user={} dbname={} {tls}",
            c.get_ports().first().copied().unwrap_or(5432),
            c.get_user().unwrap_or("postgres"),
            c.get_dbname().unwrap_or("postgres"),
        );
        if let Some(pw) = c.get_password() {
            s.push_str(&format!(" password='{}'", String::from_utf8_lossy(pw).replace('\'', "\\'")));
        }
        s
    }

    fn pg(&self, host: &str, mode: &str, root: &Path) -> PgConfig {
        let url = self.url(host, &format!("sslmode={mode} sslrootcert='{}'", root.display()));
        PgConfig::from_url_with_env(&url, &HashMap::new()).unwrap()
    }
}

impl Drop for SslServer {
    fn drop(&mut self) {
        if let Ok(mut c) = self.admin.connect() {
            for sql in [
                "ALTER SYSTEM RESET ssl_cert_file",
                "ALTER SYSTEM RESET ssl_key_file",
                "SELECT pg_reload_conf()",
            ] {
                let _ = c.batch_execute(sql);
            }
        }
    }
}

/// What the server says about this session's TLS: (ssl, version).
fn session_tls(client: &mut postgres::Client) -> (bool, Option<String>) {
    let row =
        client.query_one("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).unwrap();
    (row.get(0), row.get(1))
}

#[track_caller]
fn assert_refused(pg: &PgConfig, mentions: &[&str]) {
    match pg.connect() {
        Err(e @ Error::Unavailable(_)) => {
            let m = e.to_string();
            eprintln!("refused as expected: {m}");
            for s in mentions {
                assert!(m.contains(s), "the error should mention {s:?}: {m}");
            }
            if let Some(pw) = pg.postgres_config().get_password().filter(|p| !p.is_empty()) {
                assert!(!m.contains(&*String::from_utf8_lossy(pw)), "the error shows the password: {m}");
            }
        }
        Err(e) => panic!("expected Unavailable, got {e:?}"),
        Ok(_) => panic!("connected although it must not ({pg:?})"),
    }
}

#[test]
fn require_encrypts_and_disable_does_not() {
    let server = SslServer::enable();
    let url = server.url("localhost", "sslmode=require");
    let mut c = PgConfig::from_url_with_env(&url, &HashMap::new()).unwrap().connect().unwrap();
    let (ssl, version) = session_tls(&mut c);
    assert!(ssl, "sslmode=require must give an encrypted session");
    assert!(version.as_deref().is_some_and(|v| v.starts_with("TLSv1.")), "{version:?}");
    eprintln!("sslmode=require: encrypted with {}", version.unwrap_or_default());

    // require checks nothing about the certificate (as libpq): a name it was not issued for works.
    let url = server.url("127.0.0.1", "sslmode=require");
    let mut c = PgConfig::from_url_with_env(&url, &HashMap::new()).unwrap().connect().unwrap();
    assert!(session_tls(&mut c).0);

    let url = server.url("localhost", "sslmode=disable");
    let mut c = PgConfig::from_url_with_env(&url, &HashMap::new()).unwrap().connect().unwrap();
    assert!(!session_tls(&mut c).0, "sslmode=disable must not encrypt");

    // The same in URL form, with the settings in the query string.
    let a = server.admin.postgres_config();
    let url = format!(
        "postgres://{}:{}@localhost:{}/{}?sslmode=verify-full&sslrootcert={}",
        a.get_user().unwrap(),
        String::from_utf8_lossy(a.get_password().unwrap_or_default()),
        a.get_ports()[0],
        a.get_dbname().unwrap_or("postgres"),
        server.pki.ca_pem().display()
    );
    let mut c = PgConfig::from_url_with_env(&url, &HashMap::new()).unwrap().connect().unwrap();
    assert!(session_tls(&mut c).0);
}

#[test]
fn verify_full_checks_the_ca_and_the_host_name() {
    let server = SslServer::enable();
    let mut c = server.pg("localhost", "verify-full", &server.pki.ca_pem()).connect().unwrap();
    assert!(session_tls(&mut c).0);

    // The CA from PGSSLROOTCERT when the string names none.
    let env = HashMap::from([("PGSSLROOTCERT".to_string(), server.pki.ca_pem().display().to_string())]);
    let pg = PgConfig::from_url_with_env(&server.url("localhost", "sslmode=verify-full"), &env).unwrap();
    assert!(session_tls(&mut pg.connect().unwrap()).0);

    // A CA that did not sign the server's certificate: refused, and the message says why.
    let wrong = server.pg("localhost", "verify-full", &server.pki.other_ca_pem());
    assert_refused(&wrong, &["certificate", "verify-full", "other-ca.pem"]);
    let wrong = server.pg("localhost", "verify-ca", &server.pki.other_ca_pem());
    assert_refused(&wrong, &["certificate", "verify-ca"]);
    // require with a root certificate verifies the chain, as libpq does.
    let wrong = server.pg("localhost", "require", &server.pki.other_ca_pem());
    assert_refused(&wrong, &["certificate"]);

    // The right CA but a host name the certificate was not issued for: verify-full refuses,
    // verify-ca (chain only) accepts.
    let by_address = server.pg("127.0.0.1", "verify-full", &server.pki.ca_pem());
    assert_refused(&by_address, &["verify-full", "name this host"]);
    let mut c = server.pg("127.0.0.1", "verify-ca", &server.pki.ca_pem()).connect().unwrap();
    assert!(session_tls(&mut c).0);

    // A CA file that is missing is a configuration error naming it.
    let missing = server.pg("localhost", "verify-full", &server.pki.dir.path().join("nope.pem"));
    match missing.connect() {
        Err(Error::Config(m)) => assert!(m.contains("nope.pem"), "{m}"),
        other => panic!("expected a Config error, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_bridge_replicates_over_verify_full() {
    let server = SslServer::enable();
    let db = common::migrated_db();
    let tls =
        server.pg("localhost", "verify-full", &server.pki.ca_pem()).with_dbname(db.config.dbname().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        sqlite_path: dir.path().join("monolith.sqlite3"),
        postgres: Some(tls.clone()),
        key_source: KeySource::File(common::key_file(dir.path())),
    };
    let b = Bridge::open(config, BridgeOptions::default()).unwrap();
    let user = b.insert("users", &json!({"email": "tls@example.com", "display_name": "T"})).unwrap();
    let id = user["id"].as_str().unwrap().to_string();
    b.patch("users", &id, &json!({"display_name": "T2"})).unwrap();
    b.flush(Duration::from_secs(30)).unwrap();
    common::assert_stores_equal(&b, &db);

    // Every session on the test database (the replicator's included) is encrypted.
    let mut c = tls.connect().unwrap();
    let rows = c
        .query(
            "SELECT a.pid, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = current_database()",
            &[],
        )
        .unwrap();
    assert!(rows.len() >= 2, "the replicator's session and ours: {rows:?}");
    for r in rows {
        let (pid, ssl): (i32, bool) = (r.get(0), r.get(1));
        assert!(ssl, "session {pid} is not encrypted");
    }
    b.shutdown(Duration::from_secs(5));
}
