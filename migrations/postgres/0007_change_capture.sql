-- Change capture (logical decoding): SQLite follows every PostgreSQL change, whoever made it.

-- The write fence: the write mode as PostgreSQL knows it. A write the bridge makes in PostgreSQL
-- first (write modes postgres_primary and postgres) takes a shared advisory lock and reads this
-- row in its own transaction; a phase change takes the lock exclusively and changes the row, so
-- no such write commits in a mode the file has already left (src/store/fence.rs). Only changed
-- under the SQLite file's write lock, where the file's write mode is the authority.
CREATE TABLE dualwrite.write_fence (
    id         int         PRIMARY KEY CHECK (id = 1),
    write_mode text        NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO dualwrite.write_fence (id, write_mode) VALUES (1, 'dual');

-- What the capture slot decodes (pgoutput): the 13 target tables, nothing of dualwrite's own
-- bookkeeping. The slot itself is made at run time (a slot cannot be created in a transaction
-- that wrote), by the replicator or by the first switch that needs it (src/capture/slot.rs).
CREATE PUBLICATION dualwrite_capture FOR TABLE
    public.users, public.api_keys, public.jobs, public.job_logs, public.serpapi_results,
    public.pages, public.headings, public.embeddings, public.generated_text, public.prompts,
    public.text_analytics_cache, public.wordstat_cache, public.audit_events;

-- PostgreSQL's own outbox of the PostgreSQL-first writes (migration 5) is replaced by the
-- capture, which also sees the writers that are not the bridge.
DROP TABLE dualwrite.outbox;
