-- The bridge's own bookkeeping lives in schema "dualwrite" so the public schema stays exactly the
-- target schema. (The migration ledger, dualwrite.schema_migrations, is created by the runner.)
-- The schema is created here too, so these files applied by psql, Flyway or sqitch work as well.
CREATE SCHEMA IF NOT EXISTS dualwrite;

-- The newest revision (outbox sequence number) applied to each row, and whether that revision was
-- a delete (a tombstone). The replicator and the backfill apply a change only when its revision is
-- newer, so a row never goes back to an older copy and a deleted row never comes back.
CREATE TABLE dualwrite.row_revisions (
    table_name text    NOT NULL,
    row_key    text    NOT NULL,
    revision   bigint  NOT NULL,
    deleted    boolean NOT NULL,
    PRIMARY KEY (table_name, row_key)
);
