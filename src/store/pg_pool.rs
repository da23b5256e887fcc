//! A pool of PostgreSQL connections for callers that share them (r2d2): the writes made while
//! PostgreSQL is the primary, from any number of the monolith's threads at once. Connections are
//! opened by `PgConfig::connect`, so TLS, keepalives and the reply deadline apply as everywhere.

use crate::config::PgConfig;
use crate::error::{Error, Result};
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct Manager(PgConfig);

impl r2d2::ManageConnection for Manager {
    type Connection = postgres::Client;
    type Error = Error;

    fn connect(&self) -> Result<postgres::Client> {
        self.0.connect()
    }

    fn is_valid(&self, conn: &mut postgres::Client) -> Result<()> {
        conn.simple_query("").map(|_| ()).map_err(Error::Postgres)
    }

    fn has_broken(&self, conn: &mut postgres::Client) -> bool {
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
