-- Change capture: how far this file has followed PostgreSQL's changes (src/capture/).

-- One row. applied_lsn: the end of the newest PostgreSQL transaction this file has taken into
-- account (applied, counted as foreign, or skipped as the bridge's own); transactions ending at
-- or before it are skipped when the slot hands them out again (at-least-once delivery, applied
-- once). era: whether PostgreSQL's changes are applied here (postgres_first: PostgreSQL is the
-- primary) or only counted as foreign writes (sqlite_first). Changed only by phase switches,
-- under the file's write lock, at a position where the capture was drained.
CREATE TABLE _dualwrite_capture (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    applied_lsn     INTEGER NOT NULL DEFAULT 0,
    era             TEXT    NOT NULL DEFAULT 'sqlite_first' CHECK (era IN ('sqlite_first', 'postgres_first')),
    applied_total   INTEGER NOT NULL DEFAULT 0,
    foreign_total   INTEGER NOT NULL DEFAULT 0,
    last_commit_at  TEXT,
    last_applied_at TEXT,
    retries_total   INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    -- A forced rollback that could not drain the capture: from this position on, PostgreSQL's
    -- changes are not in this file (they show as foreign changes once PostgreSQL is back).
    cut_at_lsn      INTEGER,
    cut_at          TEXT
);
INSERT INTO _dualwrite_capture (id) VALUES (1);

-- Changes made in PostgreSQL by someone other than the bridge while SQLite is the primary: the
-- divergence, named when it happens (the newest ones; the total is in _dualwrite_capture).
CREATE TABLE _dualwrite_foreign_changes (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    lsn          INTEGER NOT NULL,
    table_name   TEXT    NOT NULL,
    row_key      TEXT    NOT NULL,
    op           TEXT    NOT NULL CHECK (op IN ('insert', 'update', 'delete', 'truncate')),
    committed_at TEXT    NOT NULL,
    seen_at      TEXT    NOT NULL
);

-- Captured changes SQLite refused (a constraint): kept with the error, the rest flows on.
CREATE TABLE _dualwrite_capture_dead_letters (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    lsn        INTEGER NOT NULL,
    table_name TEXT    NOT NULL,
    row_key    TEXT    NOT NULL,
    op         TEXT    NOT NULL,
    error      TEXT    NOT NULL,
    failed_at  TEXT    NOT NULL
);

-- PostgreSQL's own outbox (migration 5) is replaced by the capture.
DROP TABLE _dualwrite_pg_catchup;
