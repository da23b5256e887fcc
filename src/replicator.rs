//! The background replicator: takes outbox records in sequence order, in batches, applies each
//! batch to PostgreSQL in one transaction, then removes them from the outbox.
//!
//! It wakes on a crossbeam channel (a write committed) or a timer (work left by another process
//! or an earlier run). Transient failures (connection lost, shutdown, contention, schema not
//! there yet) are retried with exponential backoff and jitter after reconnecting; a change that
//! PostgreSQL refuses for a reason of its own (SQLSTATE classes 22, 23) goes to the dead letters
//! and the rest flows on. A crash between PostgreSQL's commit and the outbox delete only means the
//! batch is applied again, which the revision guard turns into a no-op.
//!
//! The same thread follows PostgreSQL's change capture (`crate::capture`) each pass, in every
//! write mode but `postgres` (SQLite frozen): SQLite applies what PostgreSQL took while it is the
//! primary, and counts the changes others made in PostgreSQL while SQLite is. One consumer per
//! slot: the lease holder.

use crate::error::{Error, Result};
use crate::flags::{FlagCache, WriteMode};
use crate::pg_connect::PgConfig;
use crate::store::outbox::{Outbox, OutboxRecord};
use crate::store::postgres::{apply_batch, is_permanent, Applied};
use crate::store::sqlite;
use crossbeam_channel::{Receiver, Sender};
use rand::Rng;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Tuning of the replicator.
#[derive(Clone, Debug)]
pub struct ReplicatorOptions {
    /// Outbox records per PostgreSQL transaction.
    pub batch_size: usize,
    /// How often to look for work nobody woke us for (another process's writes, a restart).
    pub poll_interval: Duration,
    /// First retry delay; doubles per consecutive failure up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Do not follow PostgreSQL's change capture here (tests of the outbox alone).
    pub capture_off: bool,
}

impl Default for ReplicatorOptions {
    fn default() -> Self {
        ReplicatorOptions {
            batch_size: 2000,
            poll_interval: Duration::from_millis(250),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            capture_off: false,
        }
    }
}

/// Counters shared between the replicator thread and `status`.
#[derive(Default)]
pub struct ReplicationStats {
    pub applied: AtomicU64,
    pub skipped: AtomicU64,
    pub batches: AtomicU64,
    pub retries: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub connected: AtomicBool,
    pub running: AtomicBool,
    /// This process's replicator holds the lease (is the one applying).
    pub holds_lease: AtomicBool,
    /// Captured PostgreSQL changes this process applied to SQLite.
    pub captured: AtomicU64,
    /// (when, applied total) samples of the last few seconds, for the applied/s rate.
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl ReplicationStats {
    fn sample(&self) {
        let total = self.applied.load(Ordering::Relaxed);
        if let Ok(mut s) = self.samples.lock() {
            let now = Instant::now();
            s.push_back((now, total));
            while s.front().is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(10)) {
                s.pop_front();
            }
        }
    }

    /// Changes applied per second over the last seconds of activity.
    pub fn applied_per_sec(&self) -> f64 {
        let Ok(s) = self.samples.lock() else { return 0.0 };
        match (s.front(), s.back()) {
            (Some((t0, a0)), Some((t1, a1))) if t1 > t0 => {
                (a1 - a0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// A running replicator thread.
pub struct Replicator {
    stop: Sender<Instant>,
    thread: Option<JoinHandle<()>>,
}

impl Replicator {
    pub fn start(
        sqlite_path: PathBuf,
        pg: PgConfig,
        options: ReplicatorOptions,
        wake: Receiver<()>,
        stats: Arc<ReplicationStats>,
        flags: Arc<FlagCache>,
        writer: Arc<Mutex<rusqlite::Connection>>,
    ) -> Result<Replicator> {
        let conn = sqlite::open(&sqlite_path)?;
        // Its one write, the outbox delete after a batch (`done`), need not wait for an fsync:
        // lost to a power cut, it only means the batch is applied again, which the revision claim
        // makes a no-op; WAL stays consistent, and the application's next commit (FULL, on the
        // writer connection) makes it durable anyway. Taken in turn with the application's
        // writes (under the writer lock), an fsync there would be one more fsync per batch that
        // the application's writes queue behind.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let writer = SharedWriter(writer);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let lease = Lease::new();
        let worker = Worker {
            conn,
            writer,
            pg,
            client: None,
            options,
            wake,
            stop: stop_rx,
            stats,
            flags,
            lease,
            failures: 0,
            follower: Follower {
                client: None,
                off_until: None,
                last_confirm: None,
                stream: None,
                stream_refused_until: None,
                restarted_at: None,
            },
        };
        let thread = std::thread::Builder::new()
            .name("dualwrite-replicator".into())
            .spawn(move || worker.run())
            .map_err(Error::Io)?;
        Ok(Replicator { stop: stop_tx, thread: Some(thread) })
    }

    /// Drain what can be applied before `timeout` runs out, then stop. What is left stays in the
    /// outbox for the next run.
    pub fn shutdown(mut self, timeout: Duration) {
        self.stop_and_join(timeout);
    }

    fn stop_and_join(&mut self, timeout: Duration) {
        let _ = self.stop.try_send(Instant::now() + timeout);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_and_join(Duration::from_secs(1));
        }
    }
}

/// Messages read from the capture slot per pass (a call ends at a transaction's commit, so one
/// large transaction may exceed it).
const CAPTURE_BATCH_MESSAGES: i32 = 20_000;
/// How often the capture is checked when nothing woke the thread (other writers' changes).
const CAPTURE_POLL: Duration = Duration::from_millis(20);
/// How often an idle capture confirms its position (releasing WAL of unrelated work).
const CAPTURE_IDLE_CONFIRM: Duration = Duration::from_millis(250);
/// How often a capture that cannot run (wal_level not logical) is looked at again.
const CAPTURE_RECHECK: Duration = Duration::from_secs(60);

/// The change capture as the replicator thread follows it.
struct Follower {
    /// The decoding session (`slot::DECODING_SESSION`); reads only.
    client: Option<postgres::Client>,
    /// Capture is off here (wal_level not logical) until then.
    off_until: Option<Instant>,
    last_confirm: Option<Instant>,
    /// The slot read by the replication protocol (see `capture::stream` for why), with the
    /// transactions assembled from it so far.
    stream: Option<Streaming>,
    /// PostgreSQL refused a replication connection: the SQL functions serve until then.
    stream_refused_until: Option<Instant>,
    /// When a stream the server ended was last started again at once (see `stream_step`).
    restarted_at: Option<Instant>,
}

impl Follower {
    /// A stream the server ended is started again at once at most once per
    /// [`RESTART_AT_ONCE_EVERY`]; more often goes through the failure backoff (a server that
    /// keeps ending it must not be hammered).
    fn may_restart_at_once(&mut self) -> bool {
        let now = Instant::now();
        if self.restarted_at.is_some_and(|t| now.duration_since(t) < RESTART_AT_ONCE_EVERY) {
            return false;
        }
        self.restarted_at = Some(now);
        true
    }
}

const RESTART_AT_ONCE_EVERY: Duration = Duration::from_secs(1);

struct Streaming {
    stream: crate::capture::stream::ReplicationStream,
    assembler: crate::capture::decode::Assembler,
    /// The server's position from its last keepalive: everything before it was sent.
    server_end: u64,
    /// The position last confirmed.
    confirmed: u64,
}

/// How long a new stream waits for the slot to be let go by a dead stream of ours it ended.
const SLOT_RELEASE_WAIT: Duration = Duration::from_secs(2);

/// How long a streaming step waits for a transaction when none is arriving.
const STREAM_WAIT: Duration = Duration::from_millis(20);
/// After a commit arrived, how long to wait for the next before applying what is held: short,
/// so a transaction reaches SQLite within a few milliseconds; under load the batches grow by
/// themselves while SQLite commits the last one.
const STREAM_LINGER: Duration = Duration::from_millis(1);
/// The longest a batch stays open after its first transaction arrived: SQLite takes what came
/// within it in one transaction (one fsync), so a steady stream is applied every few
/// milliseconds rather than held back until it pauses. Each batch's commit writes the pages it
/// touched to SQLite's WAL again: at 5 ms that was a quarter of the follower's CPU under a steady
/// stream, and going from 10 to 20 ms cut the follower's CPU per change from 56 to 49 us at
/// 2,000 writes/s, lag p99 26 -> 33 ms (docs/BENCHMARKS.md). A lone transaction does not wait for
/// it (STREAM_LINGER).
const STREAM_BATCH_WINDOW: Duration = Duration::from_millis(20);

struct Worker {
    /// Reads the outbox (WAL readers never wait for the writer), and deletes applied batches
    /// from it (`synchronous=NORMAL`, see `Replicator::start`).
    conn: rusqlite::Connection,
    /// The bridge's writer connection, for the replicator's own SQLite writes (outbox cleanup,
    /// dead letters, the lease, counters). Sharing the application's writer lock makes the two
    /// take turns; with a connection of its own the replicator could starve behind a monolith
    /// writing flat out, since SQLite's busy handler polls with growing sleeps.
    writer: SharedWriter,
    pg: PgConfig,
    client: Option<postgres::Client>,
    options: ReplicatorOptions,
    wake: Receiver<()>,
    stop: Receiver<Instant>,
    stats: Arc<ReplicationStats>,
    flags: Arc<FlagCache>,
    lease: Lease,
    /// Consecutive failed attempts, for the backoff.
    failures: u32,
    follower: Follower,
}

enum Pass {
    /// The outbox is empty (as far as this pass saw).
    Drained,
    /// A transient failure: wait for the backoff before trying again.
    Failed,
}

impl Worker {
    fn run(mut self) {
        self.stats.running.store(true, Ordering::Relaxed);
        let mut deadline: Option<Instant> = None;
        // After a failure, no attempt before this instant, however many writes wake us: a dead
        // PostgreSQL must see the backoff, not one connection attempt per monolith write.
        let mut not_before: Option<Instant> = None;
        loop {
            if not_before.is_none_or(|t| Instant::now() >= t) || deadline.is_some() {
                let pass = self.pass(deadline);
                if let Some(d) = deadline {
                    if matches!(pass, Pass::Drained) || Instant::now() >= d {
                        break;
                    }
                }
                not_before = match pass {
                    Pass::Drained => None,
                    Pass::Failed => Some(Instant::now() + self.backoff()),
                };
            }
            let wait = match not_before {
                Some(t) => t.saturating_duration_since(Instant::now()),
                // A streaming step waits on the socket itself.
                None if self.follower.stream.is_some() => Duration::ZERO,
                None if self.follower.off_until.is_none()
                    && self.stats.holds_lease.load(Ordering::Relaxed) =>
                {
                    self.options.poll_interval.min(CAPTURE_POLL)
                }
                None => self.options.poll_interval,
            };
            let wait = deadline.map_or(wait, |d| wait.min(d.saturating_duration_since(Instant::now())));
            crossbeam_channel::select! {
                recv(self.stop) -> msg => {
                    // A stop with a deadline: drain until then. A closed channel: the bridge is gone.
                    deadline = Some(msg.unwrap_or_else(|_| Instant::now()));
                }
                recv(self.wake) -> msg => {
                    if msg.is_err() && deadline.is_none() {
                        deadline = Some(Instant::now());
                    }
                }
                default(wait) => {}
            }
            // Coalesce a burst of wake-ups into one pass.
            while self.wake.try_recv().is_ok() {}
        }
        self.lease.release(&self.writer.lock());
        self.stats.holds_lease.store(false, Ordering::Relaxed);
        self.stats.running.store(false, Ordering::Relaxed);
        self.stats.connected.store(false, Ordering::Relaxed);
    }

    fn backoff(&self) -> Duration {
        let exp = self.options.min_backoff.saturating_mul(1u32 << self.failures.min(16));
        let capped = exp.min(self.options.max_backoff);
        // Full jitter in [50%, 100%] so several processes do not retry in lock step.
        capped.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }

    fn fail(&mut self, what: &str, e: &Error) -> Pass {
        self.failures = self.failures.saturating_add(1);
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        let msg = format!("{what}: {e}");
        tracing::warn!(error = %msg, attempt = self.failures, "replication attempt failed; will retry");
        // Shared with `dualwrite status` in other processes; losing this update loses nothing.
        let _ = Outbox::record_failure(&self.writer.lock(), &msg);
        Pass::Failed
    }

    /// Apply batches until the outbox is empty and the capture taken, a failure, or the deadline.
    fn pass(&mut self, deadline: Option<Instant>) -> Pass {
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Pass::Drained;
            }
            // Only the lease holder applies; the others keep checking whether it lapsed.
            let holds = match self.lease.hold(&self.conn, &self.writer) {
                Ok(h) => h,
                Err(e) => return self.fail("taking the replicator lease", &e),
            };
            self.stats.holds_lease.store(holds, Ordering::Relaxed);
            if !holds {
                return Pass::Drained;
            }
            let mode = self.flags.get().effective_write_mode();
            // In write mode `sqlite` (a rollback, or the emergency brake in this process) changes
            // stay captured in the outbox and nothing is applied until `dual` returns.
            let mut more = false;
            if mode != WriteMode::Sqlite {
                match self.outbox_step(deadline) {
                    Ok(m) => more |= m,
                    Err(pass) => return pass,
                }
            }
            if mode != WriteMode::Postgres && !self.options.capture_off {
                match self.capture_step() {
                    Ok(m) => more |= m,
                    Err(e) => {
                        if matches!(e, Error::Postgres(_) | Error::Unavailable(_)) {
                            self.drop_connections();
                        } else {
                            self.follower.client = None;
                            self.follower.stream = None;
                        }
                        let _ =
                            crate::capture::CaptureState::record_failure(&self.writer.lock(), &e.to_string());
                        return self.fail("following PostgreSQL's changes", &e);
                    }
                }
            }
            if !more {
                return Pass::Drained;
            }
        }
    }

    /// Whether the capture is read by the replication protocol: always, unless PostgreSQL
    /// refused a replication connection lately (no `replication` line in pg_hba.conf for the
    /// role), when the SQL functions serve instead. In `dual` too: there the slot carries every
    /// change the replicator applies, and polling the SQL functions would decode it all again and
    /// again (see `capture::stream`).
    fn streams(&self) -> bool {
        self.follower.stream_refused_until.is_none_or(|t| Instant::now() >= t)
    }

    /// One streaming batch: wait for transactions (at most [`STREAM_WAIT`]), take those that
    /// committed into SQLite in one transaction, then confirm their position to PostgreSQL.
    /// `Ok(true)`: a full batch was taken (more may be waiting).
    fn stream_step(&mut self) -> Result<bool> {
        use crate::capture::{decode::Assembler, follow, slot, stream};
        if self.follower.stream.is_none() {
            let client = self
                .follower
                .client
                .as_mut()
                .ok_or_else(|| Error::Internal("no capture connection".into()))?;
            let name = slot::name(client)?;
            let start = follow::CaptureState::load(&self.conn)?.applied_lsn;
            let mut started = stream::ReplicationStream::start(&self.pg, &name, slot::PUBLICATION, start);
            if started.as_ref().is_err_and(stream::slot_held) {
                // A stream this process gave up on (its route went silent, so it could not say
                // goodbye) still holds the slot on the server until wal_sender_timeout (60 s by
                // default) ends it. Only the lease holder streams, so a stream of ours holding the
                // slot is a dead one: end it and start again (nothing is lost: a position is
                // confirmed only after SQLite committed, and SQLite's mark skips what comes again).
                if slot::release(client)? {
                    slot::wait_until_inactive(client, SLOT_RELEASE_WAIT)?;
                }
                started = stream::ReplicationStream::start(&self.pg, &name, slot::PUBLICATION, start);
            }
            let stream = match started {
                Ok(s) => s,
                Err(e) if stream::refused(&e) => {
                    tracing::warn!(error = %e,
                        "change capture: PostgreSQL refuses replication connections to this role; reading the slot \
                         with the SQL functions instead (more CPU on the server: add a `replication` line to pg_hba.conf)");
                    self.follower.stream_refused_until = Some(Instant::now() + CAPTURE_RECHECK);
                    return Ok(true);
                }
                Err(e) => return Err(e),
            };
            self.follower.stream =
                Some(Streaming { stream, assembler: Assembler::default(), server_end: 0, confirmed: start });
        }
        let Some(st) = self.follower.stream.as_mut() else { return Ok(false) };
        let started = Instant::now();
        let mut messages = 0usize;
        let mut reply = false;
        // When the first whole transaction of this batch arrived: the batch closes
        // STREAM_BATCH_WINDOW later even while more keep arriving (under a steady stream the
        // linger alone would never end it).
        let mut first_done: Option<Instant> = None;
        let mut ended = None;
        // More arrived within STREAM_LINGER of a whole transaction: a steady stream.
        let mut busy = false;
        loop {
            if first_done.is_none() && !st.assembler.done.is_empty() {
                first_done = Some(Instant::now());
            }
            let received = match first_done {
                // A steady stream: let the rest of the window's transactions queue in the socket
                // and take them in one go (a wake-up and a read for each message cost the
                // follower more than decoding it).
                Some(first) if busy => {
                    std::thread::sleep(STREAM_BATCH_WINDOW.saturating_sub(first.elapsed()));
                    st.stream.recv_ready()
                }
                Some(first) if first.elapsed() >= STREAM_BATCH_WINDOW => break,
                Some(_) => st.stream.recv(STREAM_LINGER),
                None => st.stream.recv(STREAM_WAIT.saturating_sub(started.elapsed())),
            };
            let received = match received {
                Err(e) if stream::ended_by_server(&e) => {
                    ended = Some(e);
                    break;
                }
                r => r?,
            };
            match received {
                Some(stream::Streamed::Data { data, .. }) => {
                    st.assembler.push(&data)?;
                    messages += 1;
                }
                Some(stream::Streamed::Keepalive { end, reply: asked }) => {
                    reply |= asked;
                    if !st.assembler.in_transaction() && st.assembler.done.is_empty() {
                        st.server_end = st.server_end.max(end);
                    }
                }
                None => break,
            }
            busy |= first_done.is_some();
            if messages >= CAPTURE_BATCH_MESSAGES as usize {
                break;
            }
        }
        if let Some(e) = ended {
            // Most often a phase switch that took the slot to drain it into SQLite: start again
            // on the next step rather than through the failure backoff and new connections (a
            // stall of the follower right after every switch). What was read and not taken
            // comes again: nothing past SQLite's commit was confirmed.
            if self.follower.may_restart_at_once() {
                tracing::debug!(error = %e, "change capture stream ended by the server; starting it again");
                self.follower.stream = None;
                return Ok(true);
            }
            return Err(e);
        }
        let full = messages >= CAPTURE_BATCH_MESSAGES as usize;
        let txns = std::mem::take(&mut st.assembler.done);
        if txns.is_empty() {
            // Nothing to take: confirm the server's position now and then (no transaction is
            // open below it), so PostgreSQL can recycle the WAL of work that is not ours.
            let idle_confirm = self.follower.last_confirm.is_none_or(|t| t.elapsed() >= CAPTURE_IDLE_CONFIRM);
            if !st.assembler.in_transaction() && st.server_end > st.confirmed && idle_confirm {
                st.confirmed = st.server_end;
                st.stream.confirm(st.confirmed)?;
                self.follower.last_confirm = Some(Instant::now());
            } else {
                st.stream.keep_alive(reply)?;
            }
            return Ok(false);
        }
        let target = txns.last().map_or(0, |t| t.end_lsn);
        if txns.iter().all(|t| t.ours || t.changes.is_empty()) {
            // Only the bridge's own transactions (the replicator's, in dual): nothing for SQLite
            // to take, so no SQLite transaction (it would compete for the writer lock with the
            // monolith at every batch); confirming is enough, PostgreSQL hands out nothing
            // before the confirmed position again.
            st.confirmed = st.confirmed.max(target);
            st.stream.confirm(st.confirmed)?;
            self.follower.last_confirm = Some(Instant::now());
            return Ok(full);
        }
        let taken = {
            let mut guard = self.writer.lock();
            let tx = guard.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // The file's mode under its write lock: a switch to `postgres` (SQLite frozen) made
            // since this stream began stops it here, before anything is taken; what it read is
            // handed out again later. (Apply or only count is `take`'s choice, by the file's era.)
            if crate::flags::stored_write_mode(&tx)? == WriteMode::Postgres {
                self.follower.stream = None;
                return Ok(false);
            }
            let mut refetch = follow::Refetcher::new(&self.pg);
            let taken = follow::take(&tx, &mut refetch, &txns, target)?;
            tx.commit()?;
            taken
        };
        // Only now, with SQLite's commit done, may PostgreSQL forget these transactions.
        if let Some(st) = self.follower.stream.as_mut() {
            st.confirmed = st.confirmed.max(target);
            st.stream.confirm(st.confirmed)?;
        }
        self.follower.last_confirm = Some(Instant::now());
        self.failures = 0;
        self.stats.captured.fetch_add(taken.applied as u64, Ordering::Relaxed);
        tracing::debug!(transactions = taken.transactions, applied = taken.applied, "capture streamed");
        Ok(full)
    }

    /// Batches of the outbox to PostgreSQL, pipelined: while this thread has PostgreSQL apply
    /// batch N (its statements and its commit, as before: one connection, batches committed in
    /// sequence order), a helper thread removes batch N-1 from the outbox — PostgreSQL committed
    /// it — and reads batch N+1, the records numbered after N's last. SQLite's part of a batch
    /// (a read, a delete and its commit: ~10 % of a drain) so costs no time of its own, and the
    /// two cores work at once. A record still leaves the outbox only after PostgreSQL committed
    /// it. At most [`PIPELINED_BATCHES`] per step; `Ok(true)` when one was applied (more may wait).
    fn outbox_step(&mut self, deadline: Option<Instant>) -> std::result::Result<bool, Pass> {
        let mut batch = match Outbox::pending(&self.conn, self.options.batch_size) {
            Ok(b) => b,
            Err(e) => return Err(self.fail("reading the outbox", &e)),
        };
        if batch.is_empty() {
            return Ok(false);
        }
        self.connect()?;
        // Committed by PostgreSQL, not yet removed from the outbox.
        let mut committed: Option<(Vec<OutboxRecord>, Applied)> = None;
        for round in 0..PIPELINED_BATCHES {
            let last_round = round + 1 == PIPELINED_BATCHES
                || deadline.is_some_and(|d| Instant::now() >= d)
                || self.flags.get().effective_write_mode() == WriteMode::Sqlite
                // The pass renews the lease between steps; a step never runs past it.
                || self.lease.renewal_due();
            let span = tracing::debug_span!("apply_batch", records = batch.len(), first = batch[0].seq);
            let _enter = span.enter();
            let after = batch[batch.len() - 1].seq;
            let (applied, sqlite) = {
                let Worker { conn, writer, client, options, .. } = &mut *self;
                let Some(client) = client.as_mut() else { return Err(Pass::Failed) };
                let (writer, committed, limit) = (&*writer, &committed, options.batch_size);
                let mut outbox_side =
                    move || -> std::result::Result<Vec<OutboxRecord>, (&'static str, Error)> {
                        if let Some((done, applied)) = committed {
                            mark_applied(conn, writer, done, *applied)
                                .map_err(|e| ("marking the outbox", e))?;
                        }
                        if last_round {
                            return Ok(Vec::new());
                        }
                        Outbox::pending_after(conn, after, limit).map_err(|e| ("reading the outbox", e))
                    };
                if batch.len() < limit {
                    // Not a backlog (a steady stream's batch of a few records): nothing worth a
                    // thread to overlap, so the outbox's side runs after PostgreSQL's, here.
                    let applied = apply_batch(client, &batch, true);
                    (applied, outbox_side())
                } else {
                    std::thread::scope(|s| {
                        let helper = s.spawn(outbox_side);
                        let applied = apply_batch(client, &batch, true);
                        let sqlite = helper.join().unwrap_or_else(|_| {
                            Err(("the outbox", Error::Internal("the outbox thread panicked".into())))
                        });
                        (applied, sqlite)
                    })
                }
            };
            let next = match sqlite {
                Ok(next) => {
                    if let Some((_, applied)) = committed.take() {
                        self.count_applied(applied);
                    }
                    next
                }
                // PostgreSQL has what it committed: applying it again later is a no-op.
                Err((what, e)) => return Err(self.fail(what, &e)),
            };
            match applied {
                Ok(applied) => committed = Some((batch, applied)),
                Err(e) if is_permanent(&e) => {
                    tracing::warn!(error = %Error::Postgres(e), "batch refused; applying its changes one by one");
                    // Removes each record itself; the next step reads on from there.
                    self.isolate(&batch)?;
                    return Ok(true);
                }
                Err(e) => {
                    self.drop_connections();
                    return Err(self.fail("applying a batch", &Error::Postgres(e)));
                }
            }
            if next.is_empty() {
                break;
            }
            batch = next;
        }
        if let Some((done, applied)) = committed {
            self.done(&done, applied)?;
        }
        Ok(true)
    }

    fn connect(&mut self) -> std::result::Result<(), Pass> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            match self.pg.connect() {
                Ok(mut c) => {
                    // Its changes come from SQLite: the capture must not take them for foreign ones.
                    crate::capture::slot::tag_session_if_capturing(&mut c);
                    self.client = Some(c);
                    self.stats.connected.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    self.drop_connections();
                    return Err(self.fail("connecting", &e));
                }
            }
        }
        Ok(())
    }

    /// Let go of every PostgreSQL connection of this thread: the outbox's, the capture's decoding
    /// session and its replication stream. Called when one of them failed talking to PostgreSQL
    /// (or a connect failed): they share the route, so a network fault that killed one has most
    /// likely killed the others, and this thread uses them one after the other: each would
    /// otherwise be found dead only when next used, after its own deadline (30 s of silence),
    /// and the deadlines would add up. All are opened again on the next pass.
    ///
    /// They are closed in the background (`pg_deadline::close_in_background`): a silent one
    /// would hold this thread in its goodbye.
    fn drop_connections(&mut self) {
        use crate::pg_deadline::close_in_background;
        if let Some(c) = self.client.take() {
            close_in_background(c);
        }
        if let Some(c) = self.follower.client.take() {
            close_in_background(c);
        }
        if let Some(s) = self.follower.stream.take() {
            close_in_background(s.stream);
        }
        self.stats.connected.store(false, Ordering::Relaxed);
    }

    /// One pass over the capture slot; `Ok(true)` when it stopped at its batch size (more waits).
    fn capture_step(&mut self) -> Result<bool> {
        use crate::capture::{follow, slot};
        if self.follower.off_until.is_some_and(|t| Instant::now() < t) {
            return Ok(false);
        }
        if self.follower.client.as_ref().is_none_or(|c| c.is_closed()) {
            let mut c = self.pg.connect()?;
            slot::decoding_session(&mut c)?;
            let era = follow::CaptureState::load(&self.conn)?.era;
            // While PostgreSQL is the primary a missing slot must not be replaced quietly: a new
            // slot starts now, and what was committed since the old one's position would never
            // reach SQLite. Only `dualwrite capture resync` (a copy, then a new slot) makes
            // SQLite whole again; until then every pass fails loudly and a rollback is refused.
            if era == follow::Era::PostgresFirst && slot::state(&mut c)?.is_none() {
                return Err(Error::Unavailable(format!(
                    "the change capture slot ({}) is gone while PostgreSQL is the primary: SQLite misses what \
                     PostgreSQL committed since; run `dualwrite capture resync`",
                    slot::SLOT
                )));
            }
            // Short: this thread also replicates the outbox, which must not wait on a long
            // transaction somewhere in the cluster.
            if let Err(e) = slot::ensure_within(&mut c, Duration::from_secs(2)) {
                if matches!(e, Error::Unavailable(_)) && era == follow::Era::SqliteFirst {
                    tracing::info!(error = %e, "change capture slot not made yet");
                    self.follower.off_until = Some(Instant::now() + Duration::from_secs(10));
                    return Ok(false);
                }
                if matches!(e, Error::Config(_)) && era == follow::Era::SqliteFirst {
                    // No logical decoding on this server: dual writing works without it; say so
                    // now and then rather than failing every pass.
                    tracing::warn!(error = %e, "change capture is off: foreign writes to PostgreSQL are not seen");
                    self.follower.off_until = Some(Instant::now() + CAPTURE_RECHECK);
                    return Ok(false);
                }
                return Err(e);
            }
            self.follower.off_until = None;
            self.follower.client = Some(c);
        }
        if self.streams() {
            return self.stream_step();
        }
        self.follower.stream = None;
        let Some(client) = self.follower.client.as_mut() else { return Ok(false) };
        let mut txns = Vec::new();
        let (target, complete) = follow::peek(client, Some(CAPTURE_BATCH_MESSAGES), |t| {
            txns.push(t);
            Ok(())
        })?;
        let applied_lsn = follow::CaptureState::load(&self.conn)?.applied_lsn;
        if txns.iter().all(|t| t.end_lsn <= applied_lsn) {
            // Nothing new to take: confirm the position now and then so PostgreSQL can recycle
            // the WAL of work that is not ours to follow.
            if self.follower.last_confirm.is_none_or(|t| t.elapsed() >= CAPTURE_IDLE_CONFIRM) {
                slot::advance(client, target)?;
                self.follower.last_confirm = Some(Instant::now());
            }
            return Ok(!complete);
        }
        let taken = {
            let mut guard = self.writer.lock();
            let tx = guard.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // The file's mode under its write lock: a switch to `postgres` (SQLite frozen) made
            // since this pass began must stop it here, before anything is applied.
            if crate::flags::stored_write_mode(&tx)? == WriteMode::Postgres {
                return Ok(false);
            }
            let mut refetch = follow::Refetcher::new(&self.pg);
            let taken = follow::take(&tx, &mut refetch, &txns, target)?;
            tx.commit()?;
            taken
        };
        // Only now, with SQLite's commit done, may PostgreSQL forget these transactions.
        slot::advance(client, target)?;
        self.follower.last_confirm = Some(Instant::now());
        self.failures = 0;
        self.stats.captured.fetch_add(taken.applied as u64, Ordering::Relaxed);
        tracing::debug!(
            transactions = taken.transactions,
            applied = taken.applied,
            foreign = taken.foreign,
            "capture taken"
        );
        Ok(!complete)
    }

    /// A batch failed for a permanent reason: apply each change alone, dead-letter the ones that
    /// fail permanently, keep going with the rest (in order).
    fn isolate(&mut self, batch: &[OutboxRecord]) -> std::result::Result<(), Pass> {
        for record in batch {
            let Some(client) = self.client.as_mut() else { return Err(Pass::Failed) };
            match apply_batch(client, std::slice::from_ref(record), false) {
                Ok(applied) => self.done(std::slice::from_ref(record), applied)?,
                Err(e) if is_permanent(&e) => {
                    let msg = Error::Postgres(e).to_string();
                    tracing::error!(table = %record.table_name, key = %record.row_key, seq = record.seq, error = %msg,
                        "change refused by PostgreSQL; moved to dead letters");
                    // Bind the result first: the guard must be gone before `fail` locks again.
                    let recorded = Outbox::dead_letter(&mut self.writer.lock(), record, &msg);
                    if let Err(e) = recorded {
                        return Err(self.fail("recording a dead letter", &e));
                    }
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.drop_connections();
                    return Err(self.fail("applying a change", &Error::Postgres(e)));
                }
            }
        }
        Ok(())
    }

    /// Remove an applied batch from the outbox and count it.
    fn done(&mut self, batch: &[OutboxRecord], applied: Applied) -> std::result::Result<(), Pass> {
        if let Err(e) = mark_applied(&mut self.conn, &self.writer, batch, applied) {
            // PostgreSQL has the batch; applying it again later is a no-op.
            return Err(self.fail("marking the outbox", &e));
        }
        self.count_applied(applied);
        Ok(())
    }

    /// Count a batch PostgreSQL committed and the outbox no longer holds.
    fn count_applied(&mut self, applied: Applied) {
        self.failures = 0;
        self.stats.applied.fetch_add(applied.written as u64, Ordering::Relaxed);
        self.stats.skipped.fetch_add(applied.skipped as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.sample();
        tracing::debug!(written = applied.written, skipped = applied.skipped, "batch applied");
    }
}

/// Outbox batches one step applies back to back (see `Worker::outbox_step`) before the pass
/// gives the change capture its turn: enough that SQLite's work of each batch hides behind
/// PostgreSQL's work on the next, few enough that the capture stream is read at least every
/// half second or so while a backlog drains (the server waits for our replies).
const PIPELINED_BATCHES: usize = 8;

/// Remove `batch` (PostgreSQL committed it) from the outbox on the replicator's own connection,
/// under the application's writer lock, so the two take turns (see `Worker::writer`); the delete
/// commits without an fsync.
fn mark_applied(
    conn: &mut rusqlite::Connection,
    writer: &SharedWriter,
    batch: &[OutboxRecord],
    applied: Applied,
) -> Result<()> {
    let (first, last) = (batch[0].seq, batch[batch.len() - 1].seq);
    let _turn = writer.lock();
    Outbox::mark_applied(conn, first, last, applied.written)?;
    tracing::debug!(first, last, "batch removed from the outbox");
    Ok(())
}

/// How long a lease lasts without renewal; a dead holder is replaced this long after its last
/// renewal at the latest.
pub const LEASE_DURATION: Duration = Duration::from_secs(5);
/// The holder renews when less than this is left.
const LEASE_RENEW_BELOW: Duration = Duration::from_secs(3);

/// The single-replicator lease in `_dualwrite_replicator_lease` (see migrations/sqlite/0004).
struct Lease {
    me: String,
    /// Until when this process holds the lease, as far as it knows.
    held_until: Option<Instant>,
}

impl Lease {
    fn new() -> Lease {
        Lease {
            me: format!("pid {} {}", std::process::id(), uuid::Uuid::new_v4().simple()),
            held_until: None,
        }
    }

    /// Whether this process holds the lease now, taking or renewing it when due. Writes to
    /// SQLite only when renewing or when the lease is free or lapsed.
    fn hold(&mut self, conn: &rusqlite::Connection, writer: &SharedWriter) -> Result<bool> {
        let now = Instant::now();
        if self.held_until.is_some_and(|t| t.saturating_duration_since(now) > LEASE_RENEW_BELOW) {
            return Ok(true);
        }
        let (holder, expires): (Option<String>, Option<String>) = conn.query_row(
            "SELECT holder, expires_at FROM _dualwrite_replicator_lease WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let wall_now = crate::schema::now_timestamp();
        let free = holder.is_none()
            || holder.as_deref() == Some(self.me.as_str())
            || expires.is_none_or(|e| e < wall_now);
        if !free {
            self.held_until = None;
            return Ok(false);
        }
        let until = chrono::Utc::now()
            + chrono::Duration::from_std(LEASE_DURATION).map_err(|e| Error::Internal(e.to_string()))?;
        let taken = writer.lock().execute(
            "UPDATE _dualwrite_replicator_lease SET holder = ?1, expires_at = ?2
             WHERE id = 1 AND (holder IS NULL OR holder = ?1 OR expires_at IS NULL OR expires_at < ?3)",
            rusqlite::params![self.me, crate::schema::format_timestamp(until), wall_now],
        )? == 1;
        if taken && self.held_until.is_none() {
            tracing::info!(holder = %self.me, "this process is now the replicator");
        }
        self.held_until = taken.then(|| now + LEASE_DURATION);
        Ok(taken)
    }

    /// Whether the lease is held for less than [`LEASE_RENEW_BELOW`] more (or not at all):
    /// time to go back to [`Lease::hold`].
    fn renewal_due(&self) -> bool {
        self.held_until.is_none_or(|t| t.saturating_duration_since(Instant::now()) <= LEASE_RENEW_BELOW)
    }

    /// Give the lease up at a clean shutdown, so another process takes over at once.
    fn release(&mut self, conn: &rusqlite::Connection) {
        if self.held_until.take().is_some() {
            let _ = conn.execute(
                "UPDATE _dualwrite_replicator_lease SET holder = NULL, expires_at = NULL WHERE id = 1 AND holder = ?1",
                [&self.me],
            );
        }
    }
}

/// The bridge's writer connection as the replicator uses it.
struct SharedWriter(Arc<Mutex<rusqlite::Connection>>);

impl SharedWriter {
    fn lock(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        // A panic while holding it cannot leave a transaction open (rusqlite rolls back on drop).
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
