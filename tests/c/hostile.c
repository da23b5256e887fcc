/*
 * Hostile and malformed input: deep nesting, huge strings, wrong types, SQL metacharacters in
 * table, column and key names. Every call must fail cleanly (never DW_OK, never DW_PANIC) and
 * write nothing: tests/c_abi.rs compares both stores' row counts before and after.
 * Usage: hostile CONFIG_JSON
 */
#include "check.h"

static char sentinel_text[] = "untouched";
#define SENTINEL (sentinel_text)

/* A call on garbage must be refused with `want` and leave its output alone. */
#define REFUSED(want, call)                                                                       \
    do {                                                                                          \
        out = SENTINEL;                                                                           \
        EXPECT_RC(want, call);                                                                    \
        CHECK(out == SENTINEL);                                                                   \
        CHECK(strlen(dw_last_error_message()) < 4096);                                            \
    } while (0)

static char *repeat(const char *prefix, char c, size_t n, const char *suffix) {
    size_t p = strlen(prefix);
    size_t s = strlen(suffix);
    char *buf = malloc(p + n + s + 1);
    if (buf == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    memcpy(buf, prefix, p);
    memset(buf + p, c, n);
    memcpy(buf + p + n, suffix, s + 1);
    return buf;
}

int main(int argc, char **argv) {
    static const char *const evil_tables[] = {
        "users; DROP TABLE users; --",
        "users\"",
        "\"users\"",
        "users --",
        "USERS",
        " users",
        "users/*",
        "sqlite_master",
        "_dualwrite_outbox",
        "_dualwrite_migrations",
        "pg_catalog.pg_tables",
        "",
    };
    static const char *const garbage_rows[] = {
        "",
        " ",
        "{",
        "}",
        "null",
        "42",
        "\"users\"",
        "[{\"email\": \"a@example.com\", \"display_name\": \"A\"}]",
        "{\"email\": \"a@example.com\", \"display_name\": \"A\"} trailing",
        "{\"email\": \"a@example.com\", \"display_name\": \"A\",}",
        "{\"email\": \"a@example.com\", \"display_name\": [\"A\"]}",
        "{\"email\": \"a@example.com\", \"display_name\": {\"x\": 1}}",
        "{\"email\": null, \"display_name\": \"A\"}",
        "{\"email\": \"a@example.com\", \"display_name\": \"A\", \"id\": \"1 OR 1=1\"}",
        "{\"email\": \"a@example.com\", \"display_name\": \"A\", \"id\": 12}",
        "{\"email\": \"a@example.com\", \"display_name\": \"A\", \"created_at\": \"yesterday\"}",
        "{\"email\": \"a@example.com\", \"display_name\": \"A\", \"created_at\": 1e400}",
        "{\"email\": \"a@example.com\", \"display_name\": \"A\\u0000B\"}",
        "{\"email\": \"a@example.com\", \"display_name\": \"A\", \"x'); DROP TABLE users; --\": 1}",
        "{\"email\": \"a@example.com\", \"display_name\": \"A\", \"role\": \"admin' OR '1'='1\"}",
        "{\"email\": \"a@example.com\", \"display_name\": \"A\", \"disabled_at\": true}",
        "{\"email\": \"a@example.com\", \"display_name\": \"\\ud800\"}",
    };
    static const char *const garbage_filters[] = {
        "{\"where\": {\"email = email OR 1=1 --\": 1}}",
        "{\"where\": {\"email\": {\"$ne\": null}}}",
        "{\"where\": [\"email\"]}",
        "{\"order_by\": \"email; DROP TABLE users\"}",
        "{\"order_by\": \"(SELECT 1)\"}",
        "{\"order_by\": 1}",
        "{\"desc\": \"DESC; DROP TABLE users\"}",
        "{\"limit\": \"1; DROP TABLE users\"}",
        "{\"limit\": 1e12}",
        "{\"limit\": 10001}",
        "{\"offset\": -5}",
        "{\"limit\": 1.5}",
        "{\"nope\": 1}",
        "[]",
        "\"where\"",
        "{\"where\": {\"email\": \"a\"}",
    };
    static const char *const evil_keys[] = {
        "' OR '1'='1",
        "00000000-0000-4000-8000-000000000000' OR 1=1 --",
        "%",
        "*",
        "",
    };
    dw_bridge *b = NULL;
    char *out = SENTINEL;
    char *big;
    int deleted = 42;
    size_t i;

    if (argc != 2) {
        fprintf(stderr, "usage: %s CONFIG_JSON\n", argv[0]);
        return 2;
    }
    REQUIRE_OK(dw_bridge_open(argv[1], &b));

    for (i = 0; i < sizeof evil_tables / sizeof evil_tables[0]; i++) {
        const char *t = evil_tables[i];
        REFUSED(DW_INVALID_ARGUMENT, dw_get(b, t, "00000000-0000-4000-8000-000000000000", &out));
        REFUSED(DW_INVALID_ARGUMENT, dw_list(b, t, NULL, &out));
        REFUSED(DW_INVALID_ARGUMENT,
                dw_insert(b, t, "{\"email\": \"t@example.com\", \"display_name\": \"T\"}", &out));
        REFUSED(DW_INVALID_ARGUMENT,
                dw_patch(b, t, "00000000-0000-4000-8000-000000000000", "{\"display_name\": \"T\"}", &out));
        deleted = 42;
        EXPECT_RC(DW_INVALID_ARGUMENT, dw_delete(b, t, "00000000-0000-4000-8000-000000000000", &deleted));
        CHECK(deleted == 42);
    }
    for (i = 0; i < sizeof garbage_rows / sizeof garbage_rows[0]; i++) {
        REFUSED(DW_INVALID_ARGUMENT, dw_insert(b, "users", garbage_rows[i], &out));
    }
    for (i = 0; i < sizeof garbage_filters / sizeof garbage_filters[0]; i++) {
        REFUSED(DW_INVALID_ARGUMENT, dw_list(b, "users", garbage_filters[i], &out));
    }
    for (i = 0; i < sizeof evil_keys / sizeof evil_keys[0]; i++) {
        REFUSED(DW_INVALID_ARGUMENT, dw_get(b, "users", evil_keys[i], &out));
        REFUSED(DW_INVALID_ARGUMENT, dw_patch(b, "users", evil_keys[i], "{\"display_name\": \"K\"}", &out));
        deleted = 42;
        EXPECT_RC(DW_INVALID_ARGUMENT, dw_delete(b, "users", evil_keys[i], &deleted));
        CHECK(deleted == 42);
    }
    /* a cache key is free text: metacharacters are just a key that is not there */
    REFUSED(DW_NOT_FOUND, dw_get(b, "wordstat_cache", "' OR '1'='1", &out));
    deleted = 42;
    EXPECT_RC(DW_OK, dw_delete(b, "wordstat_cache", "x'; DELETE FROM wordstat_cache; --", &deleted));
    CHECK(deleted == 0);

    /* patches that cannot apply: wrong types, unknown and key columns */
    REFUSED(DW_INVALID_ARGUMENT, dw_patch(b, "users", "00000000-0000-4000-8000-000000000000", "[]", &out));
    REFUSED(DW_INVALID_ARGUMENT,
            dw_patch(b, "users", "00000000-0000-4000-8000-000000000000", "{\"role\": 5}", &out));
    REFUSED(DW_INVALID_ARGUMENT,
            dw_patch(b, "users", "00000000-0000-4000-8000-000000000000", "{\"nope\": 5}", &out));

    /* nesting far beyond serde_json's limit of 128: refused, not a stack overflow */
    big = repeat("", '[', 100000, "");
    REFUSED(DW_INVALID_ARGUMENT, dw_insert(b, "users", big, &out));
    REFUSED(DW_INVALID_ARGUMENT, dw_list(b, "users", big, &out));
    free(big);
    big = repeat("{\"email\": \"n@example.com\", \"display_name\": \"N\", \"x\": ", '[', 200, "");
    REFUSED(DW_INVALID_ARGUMENT, dw_insert(b, "users", big, &out));
    free(big);
    big = repeat("{\"bad\": ", '[', 5000, "");
    REFUSED(DW_INVALID_ARGUMENT, dw_bridge_open(big, (dw_bridge **)&out));
    free(big);

    /* huge strings: as a table name, a key, a value over the 8 MiB text limit, a column name */
    big = repeat("", 'u', 16u << 20, "");
    REFUSED(DW_INVALID_ARGUMENT, dw_get(b, big, "k", &out));
    REFUSED(DW_INVALID_ARGUMENT, dw_get(b, "users", big, &out));
    REFUSED(DW_INVALID_ARGUMENT, dw_get(b, "text_analytics_cache", big, &out));
    EXPECT_MESSAGE("at most");
    free(big);
    big = repeat("{\"email\": \"huge@example.com\", \"display_name\": \"", 'x', 9u << 20, "\"}");
    REFUSED(DW_INVALID_ARGUMENT, dw_insert(b, "users", big, &out));
    free(big);
    big = repeat("{\"email\": \"huge@example.com\", \"display_name\": \"H\", \"", 'c', 1u << 20, "\": 1}");
    REFUSED(DW_INVALID_ARGUMENT, dw_insert(b, "users", big, &out));
    free(big);
    big = repeat("{\"where\": {\"", 'c', 1u << 20, "\": 1}}");
    REFUSED(DW_INVALID_ARGUMENT, dw_list(b, "users", big, &out));
    free(big);
    big = repeat("", 'o', 1u << 20, ".create");
    REFUSED(DW_INVALID_ARGUMENT, dw_call(b, big, "{}", &out));
    free(big);

    /* the typed operations check their arguments too */
    REFUSED(DW_INVALID_ARGUMENT, dw_call(b, "users.create", "[]", &out));
    REFUSED(DW_INVALID_ARGUMENT, dw_call(b, "users.create", "{\"email\": 5, \"display_name\": \"X\"}", &out));
    REFUSED(DW_INVALID_ARGUMENT,
            dw_call(b, "users.create", "{\"email\": \"e@example.com\", \"display_name\": \"E\", \"nope\": 1}",
                    &out));
    REFUSED(DW_INVALID_ARGUMENT, dw_call(b, "users.get", "{\"id\": \"' OR 1=1 --\"}", &out));
    REFUSED(DW_INVALID_ARGUMENT, dw_call(b, "users; DROP TABLE users", "{}", &out));
    REFUSED(DW_INVALID_ARGUMENT, dw_call(b, "jobs.claim_next", "{\"x\": 1}", &out));

    EXPECT_RC(DW_OK, dw_bridge_close(b, 10000));
    dw_bridge_free(b);
    return finish("hostile");
}
