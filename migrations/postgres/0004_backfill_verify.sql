-- Bookkeeping of the backfill and the verifier, beside row_revisions in the bridge's own schema.

-- One row per table the backfill has started: how far it got (the last key copied, in key order),
-- how many rows it copied, and whether the table is done. Each chunk's rows and its checkpoint commit
-- in one transaction, so an interrupted run resumes after the last committed chunk and never copies
-- a committed chunk again.
CREATE TABLE dualwrite.backfill_checkpoints (
    table_name  text        PRIMARY KEY,
    last_key    text,
    rows_copied bigint      NOT NULL DEFAULT 0,
    chunks      bigint      NOT NULL DEFAULT 0,
    finished    boolean     NOT NULL DEFAULT false,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Every verify run: whether the stores matched, the per-table counts and the keys that differed
-- (capped per table), for the operator, for `dualwrite repair`, and for the phase guard rails that
-- refuse a cut-over after a failed verify.
CREATE TABLE dualwrite.verify_runs (
    id          bigserial   PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    ok          boolean     NOT NULL,
    tables      text[]      NOT NULL,
    differences bigint      NOT NULL,
    in_flight   bigint      NOT NULL,
    report      jsonb       NOT NULL
);
CREATE INDEX verify_runs_finished_at_idx ON dualwrite.verify_runs (finished_at DESC);
