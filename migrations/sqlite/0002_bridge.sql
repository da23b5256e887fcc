-- The bridge's own tables in the monolith's SQLite file, prefixed "_dualwrite_".

-- One record per committed change, written in the same transaction as the change itself.
-- seq is AUTOINCREMENT so a number is never reused, even after the newest records are deleted:
-- it is the change's revision, compared against dualwrite.row_revisions in PostgreSQL.
CREATE TABLE _dualwrite_outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    table_name TEXT NOT NULL,
    row_key    TEXT NOT NULL,
    op         TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
    -- The row after the change, as the wire JSON (NULL for a delete). Secrets only as ciphertext.
    row_image  TEXT CHECK (row_image IS NULL OR json_valid(row_image)),
    created_at TEXT NOT NULL
);

-- Changes PostgreSQL refused for a permanent reason, with the error; retried or dropped by hand.
CREATE TABLE _dualwrite_dead_letters (
    seq        INTEGER PRIMARY KEY,
    table_name TEXT NOT NULL,
    row_key    TEXT NOT NULL,
    op         TEXT NOT NULL,
    row_image  TEXT,
    created_at TEXT NOT NULL,
    failed_at  TEXT NOT NULL,
    error      TEXT NOT NULL
);
