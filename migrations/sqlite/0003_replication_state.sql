-- Replication counters shared by every process that opens the file, so `dualwrite status` (a
-- separate process) sees what the replicating process did. One row, updated with each applied
-- batch (in the same transaction that removes the batch from the outbox) and each failure.
CREATE TABLE _dualwrite_replication_state (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    applied_total   INTEGER NOT NULL DEFAULT 0,
    batches_total   INTEGER NOT NULL DEFAULT 0,
    retries_total   INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    last_error_at   TEXT,
    last_applied_at TEXT
);
INSERT INTO _dualwrite_replication_state (id) VALUES (1);
