-- The target schema of the api/worker services: the 13 tables of the design notes (seed ER diagram),
-- with exactly the columns listed there, plus:
--   * users, which the notes list without columns (see docs/ARCHITECTURE.md "users");
--   * generated_text.job_id and pages.serpapi_result_id: the ER diagram draws JOBS -> GENERATED_TEXT
--     and SERPAPI_RESULTS -> PAGES but the column lists have no column for them, so each gets a
--     nullable FK column.
-- Every foreign key is DEFERRABLE INITIALLY IMMEDIATE: ordinary statements check at once, and the
-- replicator may defer checks to the end of a batch transaction that mixes tables.
-- Foreign keys are ON DELETE NO ACTION (restrict): the monolith's SQLite schema says the same, so a
-- delete never cascades silently in one store and not in the other.
-- Value sets of the enumerated text columns are listed in docs/ARCHITECTURE.md.

CREATE TABLE users (
    id           uuid        PRIMARY KEY,
    email        text        NOT NULL,
    display_name text        NOT NULL,
    role         text        NOT NULL DEFAULT 'member'
                 CHECK (role IN ('admin', 'member', 'reviewer', 'service')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    disabled_at  timestamptz,
    CONSTRAINT users_email_key UNIQUE (email),
    CONSTRAINT users_email_lower CHECK (email = lower(email))
);

CREATE TABLE api_keys (
    id                uuid        PRIMARY KEY,
    owner_id          uuid        NOT NULL REFERENCES users (id) DEFERRABLE INITIALLY IMMEDIATE,
    provider          text        NOT NULL CHECK (provider <> ''),
    -- OpenPGP symmetric message (pgp_sym_encrypt format); the key lives outside the database.
    secret_ciphertext bytea       NOT NULL,
    metadata          jsonb       NOT NULL DEFAULT '{}',
    rotated_at        timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_keys_owner_provider_key UNIQUE (owner_id, provider)
);

CREATE TABLE jobs (
    id          uuid        PRIMARY KEY,
    type        text        NOT NULL CHECK (type <> ''),
    payload     jsonb       NOT NULL DEFAULT '{}',
    status      text        NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    progress    numeric     NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 100),
    owner_id    uuid        REFERENCES users (id) DEFERRABLE INITIALLY IMMEDIATE,
    queued_at   timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz,
    priority    text        NOT NULL DEFAULT 'normal'
                CHECK (priority IN ('low', 'normal', 'high', 'urgent'))
);
CREATE INDEX jobs_owner_id_idx ON jobs (owner_id);
CREATE INDEX jobs_status_idx ON jobs (status, queued_at);
-- A worker claims the most urgent, then oldest, queued job; priority is text, so rank it.
CREATE INDEX jobs_claim_idx ON jobs (
    (CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 ELSE 3 END),
    queued_at, id
) WHERE status = 'queued';

CREATE TABLE job_logs (
    id         uuid        PRIMARY KEY,
    job_id     uuid        NOT NULL REFERENCES jobs (id) DEFERRABLE INITIALLY IMMEDIATE,
    level      text        NOT NULL CHECK (level IN ('debug', 'info', 'warning', 'error')),
    step       text,
    message    text        NOT NULL,
    context    jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_logs_job_id_created_at_idx ON job_logs (job_id, created_at, id);

CREATE TABLE serpapi_results (
    id         uuid        PRIMARY KEY,
    keyword    text        NOT NULL,
    params     jsonb       NOT NULL DEFAULT '{}',
    raw_json   jsonb       NOT NULL,
    -- SHA-256 (hex) of the keyword and the canonical params: one stored result per query.
    hash       text        NOT NULL,
    fetched_at timestamptz NOT NULL DEFAULT now(),
    job_id     uuid        REFERENCES jobs (id) DEFERRABLE INITIALLY IMMEDIATE,
    CONSTRAINT serpapi_results_hash_key UNIQUE (hash)
);
CREATE INDEX serpapi_results_job_id_idx ON serpapi_results (job_id);

CREATE TABLE pages (
    id                uuid        PRIMARY KEY,
    url               text        NOT NULL,
    title             text,
    lang              text,
    content_hash      text,
    fetched_at        timestamptz NOT NULL DEFAULT now(),
    source_job_id     uuid        REFERENCES jobs (id) DEFERRABLE INITIALLY IMMEDIATE,
    -- Added: the ER diagram draws SERPAPI_RESULTS ||--o{ PAGES ("enriches") without a column.
    serpapi_result_id uuid        REFERENCES serpapi_results (id) DEFERRABLE INITIALLY IMMEDIATE
);
CREATE INDEX pages_source_job_id_idx ON pages (source_job_id);
CREATE INDEX pages_serpapi_result_id_idx ON pages (serpapi_result_id);
CREATE INDEX pages_url_idx ON pages (url);

CREATE TABLE embeddings (
    id         uuid        PRIMARY KEY,
    text_hash  text        NOT NULL,
    -- No fixed dimension: models differ. Build one HNSW index per model as a partial expression
    -- index, e.g. for a 384-dimension model:
    --   CREATE INDEX embeddings_minilm_hnsw ON embeddings
    --     USING hnsw ((vector::vector(384)) vector_cosine_ops) WHERE model = 'all-MiniLM-L6-v2';
    -- and query with the same cast and predicate so the planner can use it.
    vector     vector      NOT NULL,
    model      text        NOT NULL,
    meta       jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT embeddings_text_hash_model_key UNIQUE (text_hash, model)
);

CREATE TABLE headings (
    id             uuid        PRIMARY KEY,
    page_id        uuid        NOT NULL REFERENCES pages (id) DEFERRABLE INITIALLY IMMEDIATE,
    level          text        NOT NULL CHECK (level IN ('h1', 'h2', 'h3', 'h4', 'h5', 'h6')),
    text           text        NOT NULL,
    embeddings_ref uuid        REFERENCES embeddings (id) DEFERRABLE INITIALLY IMMEDIATE,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX headings_page_id_idx ON headings (page_id, created_at, id);
CREATE INDEX headings_embeddings_ref_idx ON headings (embeddings_ref);

CREATE TABLE generated_text (
    id                uuid        PRIMARY KEY,
    section_type      text        NOT NULL
                      CHECK (section_type IN ('title', 'meta_description', 'intro', 'section',
                                              'faq', 'conclusion', 'summary')),
    heading           text,
    content           text        NOT NULL,
    keywords_used     jsonb       NOT NULL DEFAULT '[]',
    lang              text,
    metrics           jsonb       NOT NULL DEFAULT '{}',
    status            text        NOT NULL DEFAULT 'draft'
                      CHECK (status IN ('draft', 'in_review', 'approved', 'rejected', 'published')),
    version           integer     NOT NULL DEFAULT 1 CHECK (version >= 1),
    source_heading_id uuid        REFERENCES headings (id) DEFERRABLE INITIALLY IMMEDIATE,
    owner_id          uuid        REFERENCES users (id) DEFERRABLE INITIALLY IMMEDIATE,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- Added: the ER diagram draws JOBS ||--o{ GENERATED_TEXT ("outputs") without a column.
    job_id            uuid        REFERENCES jobs (id) DEFERRABLE INITIALLY IMMEDIATE
);
CREATE INDEX generated_text_source_heading_id_idx ON generated_text (source_heading_id, section_type, version);
CREATE INDEX generated_text_owner_id_idx ON generated_text (owner_id, created_at);
CREATE INDEX generated_text_job_id_idx ON generated_text (job_id);

CREATE TABLE prompts (
    id         uuid        PRIMARY KEY,
    key        text        NOT NULL CHECK (key <> ''),
    body       text        NOT NULL,
    version    integer     NOT NULL CHECK (version >= 1),
    updated_by uuid        REFERENCES users (id) DEFERRABLE INITIALLY IMMEDIATE,
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Also the "latest version of a key" index: (key, version DESC) scans it backwards.
    CONSTRAINT prompts_key_version_key UNIQUE (key, version)
);
CREATE INDEX prompts_updated_by_idx ON prompts (updated_by);

-- The caches are keyed by cache_key and carry no foreign key (entries outlive their jobs).
CREATE TABLE text_analytics_cache (
    cache_key  text        PRIMARY KEY,
    value      jsonb       NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX text_analytics_cache_expires_at_idx ON text_analytics_cache (expires_at);

CREATE TABLE wordstat_cache (
    cache_key  text        PRIMARY KEY,
    value      jsonb       NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX wordstat_cache_expires_at_idx ON wordstat_cache (expires_at);

-- entity/entity_id is a polymorphic reference (a job, a key, a prompt...), not a foreign key.
CREATE TABLE audit_events (
    id         uuid        PRIMARY KEY,
    actor_id   uuid        REFERENCES users (id) DEFERRABLE INITIALLY IMMEDIATE,
    action     text        NOT NULL CHECK (action <> ''),
    entity     text        NOT NULL,
    entity_id  uuid,
    metadata   jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_entity_idx ON audit_events (entity, entity_id, created_at);
CREATE INDEX audit_events_actor_id_idx ON audit_events (actor_id, created_at);
