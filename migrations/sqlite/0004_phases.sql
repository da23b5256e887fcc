-- Migration-phase flags, shared by every process that opens the file. Names:
--   write_mode                 sqlite | dual | postgres_primary | postgres
--   read_source                sqlite | postgres | shadow
--   read_source:<table>        a per-table override of read_source
-- Every change is also recorded in audit_events (by the library, in the same transaction).
CREATE TABLE _dualwrite_flags (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    reason     TEXT NOT NULL
);
INSERT INTO _dualwrite_flags (name, value, updated_at, updated_by, reason)
VALUES ('write_mode', 'dual', strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'), 'migration', 'initial phase'),
       ('read_source', 'sqlite', strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'), 'migration', 'initial phase');

-- Exactly one replicator applies the outbox at a time, whichever process holds this lease. The
-- holder renews it while it works; when the holder dies the lease expires and another process
-- takes over. It lives in SQLite (shared by every process of the monolith, which all open this
-- file) rather than in PostgreSQL, so it works while PostgreSQL is down and through any
-- connection pooler. A stale holder applying a batch after losing the lease is harmless: every
-- change is revision-guarded.
CREATE TABLE _dualwrite_replicator_lease (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    holder     TEXT,
    expires_at TEXT
);
INSERT INTO _dualwrite_replicator_lease (id) VALUES (1);
