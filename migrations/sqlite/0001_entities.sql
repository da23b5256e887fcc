-- The 13 entities in SQLite, mirroring migrations/postgres/0002_target_schema.sql with the type
-- mapping of docs/ARCHITECTURE.md: uuid -> TEXT (lower-case, hyphenated), jsonb -> TEXT holding
-- valid JSON, timestamptz -> TEXT 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (UTC, microseconds), numeric -> TEXT
-- holding an exact decimal, int -> INTEGER, bytea -> BLOB, vector -> BLOB of little-endian f32.
-- Same keys, foreign keys (ON DELETE NO ACTION) and CHECKs as PostgreSQL. The library fills ids and
-- timestamps, so columns carry no SQL defaults beyond the JSON/empty ones.

CREATE TABLE users (
    id           TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    email        TEXT NOT NULL UNIQUE CHECK (email = lower(email)),
    display_name TEXT NOT NULL,
    role         TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member', 'reviewer', 'service')),
    created_at   TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    updated_at   TEXT NOT NULL CHECK (updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    disabled_at  TEXT CHECK (disabled_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE TABLE api_keys (
    id                TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    owner_id          TEXT NOT NULL REFERENCES users (id),
    provider          TEXT NOT NULL CHECK (provider <> ''),
    secret_ciphertext BLOB NOT NULL CHECK (typeof(secret_ciphertext) = 'blob'),
    metadata          TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    rotated_at        TEXT CHECK (rotated_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    created_at        TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    updated_at        TEXT NOT NULL CHECK (updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    UNIQUE (owner_id, provider)
);

CREATE TABLE jobs (
    id          TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    type        TEXT NOT NULL CHECK (type <> ''),
    payload     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(payload)),
    status      TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    progress    TEXT NOT NULL DEFAULT '0' CHECK (typeof(progress) = 'text' AND CAST(progress AS REAL) BETWEEN 0 AND 100),
    owner_id    TEXT REFERENCES users (id),
    queued_at   TEXT NOT NULL CHECK (queued_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    started_at  TEXT CHECK (started_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    finished_at TEXT CHECK (finished_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    priority    TEXT NOT NULL DEFAULT 'normal' CHECK (priority IN ('low', 'normal', 'high', 'urgent'))
);
CREATE INDEX jobs_owner_id_idx ON jobs (owner_id);
CREATE INDEX jobs_status_idx ON jobs (status, queued_at);
CREATE INDEX jobs_claim_idx ON jobs (
    (CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 ELSE 3 END),
    queued_at, id
) WHERE status = 'queued';

CREATE TABLE job_logs (
    id         TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    job_id     TEXT NOT NULL REFERENCES jobs (id),
    level      TEXT NOT NULL CHECK (level IN ('debug', 'info', 'warning', 'error')),
    step       TEXT,
    message    TEXT NOT NULL,
    context    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(context)),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);
CREATE INDEX job_logs_job_id_created_at_idx ON job_logs (job_id, created_at, id);

CREATE TABLE serpapi_results (
    id         TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    keyword    TEXT NOT NULL,
    params     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(params)),
    raw_json   TEXT NOT NULL CHECK (json_valid(raw_json)),
    hash       TEXT NOT NULL UNIQUE,
    fetched_at TEXT NOT NULL CHECK (fetched_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    job_id     TEXT REFERENCES jobs (id)
);
CREATE INDEX serpapi_results_job_id_idx ON serpapi_results (job_id);

CREATE TABLE pages (
    id                TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    url               TEXT NOT NULL,
    title             TEXT,
    lang              TEXT,
    content_hash      TEXT,
    fetched_at        TEXT NOT NULL CHECK (fetched_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    source_job_id     TEXT REFERENCES jobs (id),
    serpapi_result_id TEXT REFERENCES serpapi_results (id)
);
CREATE INDEX pages_source_job_id_idx ON pages (source_job_id);
CREATE INDEX pages_serpapi_result_id_idx ON pages (serpapi_result_id);
CREATE INDEX pages_url_idx ON pages (url);

CREATE TABLE embeddings (
    id         TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    text_hash  TEXT NOT NULL,
    vector     BLOB NOT NULL CHECK (typeof(vector) = 'blob' AND length(vector) > 0 AND length(vector) % 4 = 0),
    model      TEXT NOT NULL,
    meta       TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta)),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    UNIQUE (text_hash, model)
);

CREATE TABLE headings (
    id             TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    page_id        TEXT NOT NULL REFERENCES pages (id),
    level          TEXT NOT NULL CHECK (level IN ('h1', 'h2', 'h3', 'h4', 'h5', 'h6')),
    text           TEXT NOT NULL,
    embeddings_ref TEXT REFERENCES embeddings (id),
    created_at     TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);
CREATE INDEX headings_page_id_idx ON headings (page_id, created_at, id);
CREATE INDEX headings_embeddings_ref_idx ON headings (embeddings_ref);

CREATE TABLE generated_text (
    id                TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    section_type      TEXT NOT NULL CHECK (section_type IN ('title', 'meta_description', 'intro', 'section', 'faq', 'conclusion', 'summary')),
    heading           TEXT,
    content           TEXT NOT NULL,
    keywords_used     TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(keywords_used)),
    lang              TEXT,
    metrics           TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metrics)),
    status            TEXT NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'in_review', 'approved', 'rejected', 'published')),
    version           INTEGER NOT NULL DEFAULT 1 CHECK (typeof(version) = 'integer' AND version >= 1),
    source_heading_id TEXT REFERENCES headings (id),
    owner_id          TEXT REFERENCES users (id),
    created_at        TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    job_id            TEXT REFERENCES jobs (id)
);
CREATE INDEX generated_text_source_heading_id_idx ON generated_text (source_heading_id, section_type, version);
CREATE INDEX generated_text_owner_id_idx ON generated_text (owner_id, created_at);
CREATE INDEX generated_text_job_id_idx ON generated_text (job_id);

CREATE TABLE prompts (
    id         TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    key        TEXT NOT NULL CHECK (key <> ''),
    body       TEXT NOT NULL,
    version    INTEGER NOT NULL CHECK (typeof(version) = 'integer' AND version >= 1),
    updated_by TEXT REFERENCES users (id),
    updated_at TEXT NOT NULL CHECK (updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    UNIQUE (key, version)
);
CREATE INDEX prompts_updated_by_idx ON prompts (updated_by);

CREATE TABLE text_analytics_cache (
    cache_key  TEXT NOT NULL PRIMARY KEY,
    value      TEXT NOT NULL CHECK (json_valid(value)),
    expires_at TEXT NOT NULL CHECK (expires_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);
CREATE INDEX text_analytics_cache_expires_at_idx ON text_analytics_cache (expires_at);

CREATE TABLE wordstat_cache (
    cache_key  TEXT NOT NULL PRIMARY KEY,
    value      TEXT NOT NULL CHECK (json_valid(value)),
    expires_at TEXT NOT NULL CHECK (expires_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);
CREATE INDEX wordstat_cache_expires_at_idx ON wordstat_cache (expires_at);

CREATE TABLE audit_events (
    id         TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    actor_id   TEXT REFERENCES users (id),
    action     TEXT NOT NULL CHECK (action <> ''),
    entity     TEXT NOT NULL,
    entity_id  TEXT CHECK (entity_id IS NULL OR length(entity_id) = 36),
    metadata   TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);
CREATE INDEX audit_events_entity_idx ON audit_events (entity, entity_id, created_at);
CREATE INDEX audit_events_actor_id_idx ON audit_events (actor_id, created_at);
