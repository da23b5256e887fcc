//! A pool of PostgreSQL connections for callers that share them (r2d2): the writes made while
//! PostgreSQL is the primary, from any number of the monolith's threads at once. Connections are
//! opened by `PgConfig::connect`, so TLS, keepalives and the reply deadline apply as everywhere.

use crate::error::{Error, Result};
use crate::pg_connect::PgConfig;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct Manager(PgConfig);

/// A pooled connection and the statements prepared on it: the writes of the PostgreSQL-first
/// modes run the same few statements (per table and operation) again and again, and a statement
/// prepared once saves a round trip each time.
pub(crate) struct PgConn {
    client: postgres::Client,
    statements: HashMap<String, postgres::Statement>,
}

/// Prepared statements kept per connection (the statements of this crate: a bounded set).
const MAX_STATEMENTS: usize = 512;

impl PgConn {
    /// A connection of its own (not pooled) that keeps its prepared statements too.
    pub(crate) fn new(client: postgres::Client) -> PgConn {
        PgConn { client, statements: HashMap::new() }
    }

    /// `sql` prepared on this connection, from the cache after the first time.
    pub(crate) fn prepared(
        &mut self,
        sql: &str,
    ) -> std::result::Result<postgres::Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        if self.statements.len() < MAX_STATEMENTS {
            self.statements.insert(sql.to_string(), s.clone());
        }
        Ok(s)
    }
}

impl std::ops::Deref for PgConn {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        &self.client
    }
}

impl std::ops::DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        &mut self.client
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = Error;

    fn connect(&self) -> Result<PgConn> {
        Ok(PgConn::new(self.0.connect()?))
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<()> {
        conn.simple_query("").map(|_| ()).map_err(Error::Postgres)
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.is_closed()
    }
}

pub(crate) type PgPool = r2d2::Pool<Manager>;
pub(crate) type PooledClient = r2d2::PooledConnection<Manager>;

/// How long a caller waits for a connection (a free one, or a new one while PostgreSQL answers
/// no connect) before its write fails as unavailable.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);

/// A pool of at most `size` connections, opened on demand (none at start: opening a bridge must
/// not fail because PostgreSQL is down while SQLite is the primary).
pub(crate) fn new_pool(pg: &PgConfig, size: u32) -> PgPool {
    r2d2::Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        // A dead connection shows as closed (has_broken); a round trip per checkout would cost
        // every write one more.
        .test_on_check_out(false)
        .connection_timeout(CHECKOUT_TIMEOUT)
        .idle_timeout(Some(Duration::from_secs(300)))
        // One helper thread (reaping idle connections) instead of r2d2's default three per pool.
        .thread_pool(Arc::new(scheduled_thread_pool::ScheduledThreadPool::new(1)))
        // Failed connects are reported to the caller that waited (`get`), not logged per attempt.
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build_unchecked(Manager(pg.clone()))
}

/// A connection from the pool, or why there is none.
pub(crate) fn get(pool: &PgPool, what: &str) -> Result<PooledClient> {
    pool.get().map_err(|e| {
        Error::Unavailable(format!("{what}: no PostgreSQL connection within {CHECKOUT_TIMEOUT:?}: {e}"))
    })
}
