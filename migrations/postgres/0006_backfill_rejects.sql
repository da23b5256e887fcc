-- Rows the backfill could not copy, so the rest of their table goes on (src/legacy/rejects.rs).

-- One row per (table, key): why it was rejected (stage 'convert': a value the conversion rules
-- cannot turn into the target type; 'postgres': PostgreSQL refused the row, e.g. an orphaned
-- foreign key), the problems (column, value with secrets redacted, reason), how many attempts,
-- and resolved_at once a later run copied the row or found it gone from SQLite. The rows still
-- unresolved are exactly what `dualwrite backfill --retry-rejects` reads again. Written in the
-- transaction of the chunk that met the row, together with the chunk's checkpoint.
-- IF NOT EXISTS: builds before this migration created the same table on first use.
CREATE TABLE IF NOT EXISTS dualwrite.backfill_rejects (
    table_name    text        NOT NULL,
    row_key       text        NOT NULL,
    stage         text        NOT NULL CHECK (stage IN ('convert', 'postgres')),
    problems      jsonb       NOT NULL,
    attempts      integer     NOT NULL DEFAULT 1,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at   timestamptz,
    PRIMARY KEY (table_name, row_key)
);
-- The pending rejects of a table: the retry's key list, and the backfill resolving keys it copied.
CREATE INDEX IF NOT EXISTS backfill_rejects_pending_idx
    ON dualwrite.backfill_rejects (table_name, row_key) WHERE resolved_at IS NULL;
