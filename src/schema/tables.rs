//! The 13 tables, in foreign-key order (every table after the tables it references).
//! Column lists follow the seed's ER diagram exactly; users and the two added FK columns are
//! explained in docs/ARCHITECTURE.md. Keep in step with migrations/*/ (a test checks).

use super::{ColType as T, Column, ForeignKey, GeneratedDefault, Rule, Table};

const fn col(name: &'static str, ty: T) -> Column {
    Column {
        name,
        ty,
        nullable: false,
        allowed: None,
        rule: None,
        secret: false,
        default: None,
        generated_default: None,
    }
}
const fn opt(name: &'static str, ty: T) -> Column {
    let mut c = col(name, ty);
    c.nullable = true;
    c
}
const fn one_of(name: &'static str, allowed: &'static [&'static str]) -> Column {
    let mut c = col(name, T::Text);
    c.allowed = Some(allowed);
    c
}
/// The same column with a default (wire JSON text) for inserts that leave it out.
const fn def(mut c: Column, default: &'static str) -> Column {
    c.default = Some(default);
    c
}
/// A NOT NULL timestamp PostgreSQL defaults to `now()`.
const fn stamp(name: &'static str) -> Column {
    let mut c = col(name, T::Timestamptz);
    c.generated_default = Some(GeneratedDefault::Now);
    c
}
/// The same column with a CHECK rule.
const fn rule(mut c: Column, rule: Rule) -> Column {
    c.rule = Some(rule);
    c
}
const NON_EMPTY: Rule = Rule::NonEmpty;
const AT_LEAST_ONE: Rule = Rule::Range { min: 1, max: None };
const PERCENT: Rule = Rule::Range { min: 0, max: Some(100) };
const fn fk(column: &'static str, references: &'static str) -> ForeignKey {
    ForeignKey { column, references }
}

pub const USER_ROLES: &[&str] = &["admin", "member", "reviewer", "service"];
pub const JOB_STATUSES: &[&str] = &["queued", "running", "succeeded", "failed", "cancelled"];
pub const JOB_PRIORITIES: &[&str] = &["low", "normal", "high", "urgent"];
pub const LOG_LEVELS: &[&str] = &["debug", "info", "warning", "error"];
pub const HEADING_LEVELS: &[&str] = &["h1", "h2", "h3", "h4", "h5", "h6"];
pub const SECTION_TYPES: &[&str] =
    &["title", "meta_description", "intro", "section", "faq", "conclusion", "summary"];
pub const GENERATED_TEXT_STATUSES: &[&str] = &["draft", "in_review", "approved", "rejected", "published"];

pub static TABLES: &[Table] = &[
    Table {
        name: "users",
        key: "id",
        columns: &[
            col("id", T::Uuid),
            rule(col("email", T::Text), Rule::LowerCase),
            col("display_name", T::Text),
            def(one_of("role", USER_ROLES), r#""member""#),
            stamp("created_at"),
            stamp("updated_at"),
            opt("disabled_at", T::Timestamptz),
        ],
        foreign_keys: &[],
        unique: &[&["email"]],
        indexes: &[],
    },
    Table {
        name: "api_keys",
        key: "id",
        columns: &[
            col("id", T::Uuid),
            col("owner_id", T::Uuid),
            rule(col("provider", T::Text), NON_EMPTY),
            Column { secret: true, ..col("secret_ciphertext", T::Bytea) },
            def(col("metadata", T::Jsonb), "{}"),
            opt("rotated_at", T::Timestamptz),
            stamp("created_at"),
            stamp("updated_at"),
        ],
        foreign_keys: &[fk("owner_id", "users")],
        unique: &[&["owner_id", "provider"]],
        indexes: &[],
    },
    Table {
        name: "jobs",
        key: "id",
        columns: &[
            col("id", T::Uuid),
            rule(col("type", T::Text), NON_EMPTY),
            def(col("payload", T::Jsonb), "{}"),
            def(one_of("status", JOB_STATUSES), r#""queued""#),
            def(rule(col("progress", T::Numeric), PERCENT), r#""0""#),
            opt("owner_id", T::Uuid),
            stamp("queued_at"),
            opt("started_at", T::Timestamptz),
            opt("finished_at", T::Timestamptz),
            def(one_of("priority", JOB_PRIORITIES), r#""normal""#),
        ],
        foreign_keys: &[fk("owner_id", "users")],
        unique: &[],
        indexes: &[],
    },
    Table {
        name: "job_logs",
        key: "id",
        columns: &[
            col("id", T::Uuid),
            col("job_id", T::Uuid),
            one_of("level", LOG_LEVELS),
            opt("step", T::Text),
            col("message", T::Text),
            def(col("context", T::Jsonb), "{}"),
            stamp("created_at"),
        ],
        foreign_keys: &[fk("job_id", "jobs")],
        unique: &[],
        indexes: &[],
    },
    Table {
        name: "serpapi_results",
        key: "id",
        columns: &[
            col("id", T::Uuid),
            col("keyword", T::Text),
            def(col("params", T::Jsonb), "{}"),
            col("raw_json", T::Jsonb),
            col("hash", T::Text),
            stamp("fetched_at"),
            opt("job_id", T::Uuid),
        ],
        foreign_keys: &[fk("job_id", "jobs")],
        unique: &[&["hash"]],
        indexes: &[],
    },
    Table {
        name: "pages",
        key: "id",
        columns: &[
            col("id", T::Uuid),
            col("url", T::Text),
            opt("title", T::Text),
            opt("lang", T::Text),
            opt("content_hash", T::Text),
            stamp("fetched_at"),
            opt("source_job_id", T::Uuid),
            opt("serpapi_result_id", T::Uuid),
        ],
        foreign_keys: &[fk("source_job_id", "jobs"), fk("serpapi_result_id", "serpapi_results")],
        unique: &[],
        indexes: &[&["url"]],
    },
    Table {
        name: "embeddings",
        key: "id",
        columns: &[
            col("id", T::Uuid),
            col("text_hash", T::Text),
            col("vector", T::Vector),
            col("model", T::Text),
            def(col("meta", T::Jsonb), "{}"),
            stamp("created_at"),
        ],
        foreign_keys: &[],
        unique: &[&["text_hash", "model"]],
        indexes: &[],
    },
    Table {
        name: "headings",
        key: "id",
        columns: &[
            col("id", T::Uuid),
            col("page_id", T::Uuid),
            one_of("level", HEADING_LEVELS),
            col("text", T::Text),
            opt("embeddings_ref", T::Uuid),
            stamp("created_at"),
        ],
        foreign_keys: &[fk("page_id", "pages"), fk("embeddings_ref", "embeddings")],
        unique: &[],
        indexes: &[],
    },
    Table {
        name: "generated_text",
        key: "id",
        columns: &[
            col("id", T::Uuid),
            one_of("section_type", SECTION_TYPES),
            opt("heading", T::Text),
            col("content", T::Text),
            def(col("keywords_used", T::Jsonb), "[]"),
            opt("lang", T::Text),
            def(col("metrics", T::Jsonb), "{}"),
            def(one_of("status", GENERATED_TEXT_STATUSES), r#""draft""#),
            def(rule(col("version", T::Int), AT_LEAST_ONE), "1"),
            opt("source_heading_id", T::Uuid),
            opt("owner_id", T::Uuid),
            stamp("created_at"),
            opt("job_id", T::Uuid),
        ],
        foreign_keys: &[fk("source_heading_id", "headings"), fk("owner_id", "users"), fk("job_id", "jobs")],
        unique: &[],
        indexes: &[],
    },
    Table {
        name: "prompts",
        key: "id",
        columns: &[
            col("id", T::Uuid),
            rule(col("key", T::Text), NON_EMPTY),
            col("body", T::Text),
            rule(col("version", T::Int), AT_LEAST_ONE),
            opt("updated_by", T::Uuid),
            stamp("updated_at"),
        ],
        foreign_keys: &[fk("updated_by", "users")],
        unique: &[&["key", "version"]],
        indexes: &[],
    },
    Table {
        name: "text_analytics_cache",
        key: "cache_key",
        columns: &[col("cache_key", T::Text), col("value", T::Jsonb), col("expires_at", T::Timestamptz)],
        foreign_keys: &[],
        unique: &[],
        indexes: &[],
    },
    Table {
        name: "wordstat_cache",
        key: "cache_key",
        columns: &[col("cache_key", T::Text), col("value", T::Jsonb), col("expires_at", T::Timestamptz)],
        foreign_keys: &[],
        unique: &[],
        indexes: &[],
    },
    Table {
        name: "audit_events",
        key: "id",
        columns: &[
            col("id", T::Uuid),
            opt("actor_id", T::Uuid),
            rule(col("action", T::Text), NON_EMPTY),
            col("entity", T::Text),
            opt("entity_id", T::Uuid),
            def(col("metadata", T::Jsonb), "{}"),
            stamp("created_at"),
        ],
        foreign_keys: &[fk("actor_id", "users")],
        unique: &[],
        indexes: &[&["entity", "entity_id", "created_at"]],
    },
];
