-- The write modes postgres_primary and postgres: PostgreSQL takes the writes first.

-- Revisions of changes written to PostgreSQL first. Before such a write mode begins, the
-- sequence is moved past every revision SQLite's outbox has handed out, and when SQLite takes
-- writes again its outbox numbering is moved past this sequence: one increasing revision space
-- for dualwrite.row_revisions, whichever store took a change first.
CREATE SEQUENCE dualwrite.revision_seq AS bigint;

-- Every change written to PostgreSQL first, in commit order, so SQLite can be caught up from it
-- (synchronously behind each write in postgres_primary; before a rollback from postgres). SQLite
-- remembers the newest seq it holds; records at or below that number are deleted lazily.
CREATE TABLE dualwrite.outbox (
    seq        bigserial   PRIMARY KEY,
    revision   bigint      NOT NULL,
    table_name text        NOT NULL,
    row_key    text        NOT NULL,
    op         text        NOT NULL CHECK (op IN ('upsert', 'delete')),
    -- The row after the change in the wire form (NULL for a delete); secrets only as ciphertext.
    row_image  text,
    created_at timestamptz NOT NULL DEFAULT now()
);
