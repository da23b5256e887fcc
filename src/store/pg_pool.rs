//! A pool of PostgreSQL connections for callers that share them (r2d2): the writes made while
//! PostgreSQL is the primary, from any number of the monolith's threads at once. Connections are
//! opened by `PgConfig::connect`, so TLS, keepalives and the reply deadline apply as everywhere.
//!
//! After a network fault the pool must neither hand out a connection that died in it nor make
//! callers wait for connects that started while PostgreSQL did not answer:
//! - a connection found broken when it comes back (the reply deadline failed it, the server ended
//!   it) makes every connection older than it suspect: each is discarded when next checked out,
//!   without a round trip (a silent one would cost the caller the whole reply deadline), and the
//!   pool connects anew ([`Manager::is_valid`]);
//! - a connect gives up after `connect_timeout` (`PgConfig::connect`), and r2d2 retries a failed
//!   one within a second ([`RETRY_CAP`]), so once PostgreSQL answers again a waiting caller gets
//!   a connection within about `connect_timeout` + 1 s, well inside [`CHECKOUT_TIMEOUT`].

use crate::error::{Error, Result};
use crate::pg_connect::PgConfig;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct Manager {
    pg: PgConfig,
    /// Counts the connections found broken; a connection remembers the count when it was opened,
    /// and one opened before the last break is not trusted again.
    breaks: AtomicU64,
}

/// A pooled connection and the statements prepared on it: the writes of the PostgreSQL-first
/// modes run the same few statements (per table and operation) again and again, and a statement
/// prepared once saves a round trip each time.
pub(crate) struct PgConn {
    /// Always `Some` until the connection is dropped.
    client: Option<postgres::Client>,
    statements: HashMap<String, postgres::Statement>,
    /// `Manager::breaks` when this connection was opened (0 outside a pool).
    opened_after_breaks: u64,
    /// Discarded as suspect: it may be silent, so it is closed in the background
    /// (`pg_deadline::close_in_background`) rather than on the thread that checked it out.
    close_in_background: bool,
}

/// Prepared statements kept per connection (the statements of this crate: a bounded set).
const MAX_STATEMENTS: usize = 512;

impl PgConn {
    /// A connection of its own (not pooled) that keeps its prepared statements too.
    pub(crate) fn new(client: postgres::Client) -> PgConn {
        PgConn {
            client: Some(client),
            statements: HashMap::new(),
            opened_after_breaks: 0,
            close_in_background: false,
        }
    }

    /// `sql` prepared on this connection, from the cache after the first time.
    pub(crate) fn prepared(
        &mut self,
        sql: &str,
    ) -> std::result::Result<postgres::Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.prepare(sql)?;
        if self.statements.len() < MAX_STATEMENTS {
            self.statements.insert(sql.to_string(), s.clone());
        }
        Ok(s)
    }
}

impl std::ops::Deref for PgConn {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        self.client.as_ref().expect("a PgConn holds its client until dropped")
    }
}

impl std::ops::DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        self.client.as_mut().expect("a PgConn holds its client until dropped")
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        if let Some(client) = self.client.take().filter(|_| self.close_in_background) {
            crate::pg_deadline::close_in_background(client);
        }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = Error;

    fn connect(&self) -> Result<PgConn> {
        // Read before connecting: a break seen while this connect runs (a network fault) leaves
        // the new connection suspect too.
        let breaks = self.breaks.load(Ordering::SeqCst);
        let mut conn = PgConn::new(self.pg.connect()?);
        conn.opened_after_breaks = breaks;
        Ok(conn)
    }

    /// Checked at every checkout, without a round trip: a connection opened before a connection
    /// of this pool was found broken is discarded (r2d2 then takes another or connects anew). A
    /// network fault that killed one idle connection has most likely killed the others too, and
    /// one that stays open but silent (a hung middlebox) would hold its caller for the whole reply
    /// deadline; a healthy one discarded costs one reconnect.
    fn is_valid(&self, conn: &mut PgConn) -> Result<()> {
        if conn.is_closed() || conn.opened_after_breaks < self.breaks.load(Ordering::SeqCst) {
            conn.close_in_background = true;
            return Err(Error::Unavailable(
                "a pooled connection older than a broken one is not reused".into(),
            ));
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        let broken = conn.is_closed();
        if broken {
            self.breaks.fetch_add(1, Ordering::SeqCst);
        }
        broken
    }
}

pub(crate) type PgPool = r2d2::Pool<Manager>;
pub(crate) type PooledClient = r2d2::PooledConnection<Manager>;

/// How long a caller waits for a connection (a free one, or a new one while PostgreSQL answers
/// no connect) before its write fails as unavailable.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest r2d2 waits before retrying a failed connect: half of its `connection_timeout`
/// (r2d2 0.8 doubles the delay from 200 ms up to that). The callers' own wait is
/// [`CHECKOUT_TIMEOUT`], passed at each checkout, so r2d2's setting serves only as this cap.
const RETRY_CAP: Duration = Duration::from_secs(1);

/// A pool of at most `size` connections, opened on demand (none at start: opening a bridge must
/// not fail because PostgreSQL is down while SQLite is the primary).
pub(crate) fn new_pool(pg: &PgConfig, size: u32) -> PgPool {
    r2d2::Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        // Without a round trip (`Manager::is_valid`): one per checkout would cost every write
        // one more.
        .test_on_check_out(true)
        .connection_timeout(RETRY_CAP * 2)
        .idle_timeout(Some(Duration::from_secs(300)))
        // One helper thread (reaping idle connections) instead of r2d2's default three per pool.
        .thread_pool(Arc::new(scheduled_thread_pool::ScheduledThreadPool::new(1)))
        // Failed connects are reported to the caller that waited (`get`), not logged per attempt.
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build_unchecked(Manager { pg: pg.clone(), breaks: AtomicU64::new(0) })
}

/// A connection from the pool, or why there is none.
pub(crate) fn get(pool: &PgPool, what: &str) -> Result<PooledClient> {
    pool.get_timeout(CHECKOUT_TIMEOUT).map_err(|e| {
        Error::Unavailable(format!("{what}: no PostgreSQL connection within {CHECKOUT_TIMEOUT:?}: {e}"))
    })
}
