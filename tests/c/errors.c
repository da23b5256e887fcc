/*
 * Every result code a caller can meet, NULL for every pointer argument, and text that is not
 * UTF-8. Outputs must be left alone on failure.
 * Usage: errors CONFIG_JSON SQLITE_ONLY_CONFIG_JSON
 *   CONFIG_JSON               a bridge replicating to a (migrated) PostgreSQL database
 *   SQLITE_ONLY_CONFIG_JSON   a bridge on another SQLite file with "postgres_url": null and a
 *                             secret key that is not configured
 */
#include "check.h"

/* Something no call may write into an output on failure. */
static char sentinel_text[] = "untouched";
#define SENTINEL (sentinel_text)

static void result_strings(void) {
    int code;
    /* every code has its own static text; unknown codes are named as such */
    for (code = DW_OK; code <= DW_READ_ONLY; code++) {
        const char *text = dw_result_str(code);
        CHECK(text != NULL);
        CHECK(strcmp(text, "unknown result code") != 0);
    }
    CHECK(strcmp(dw_result_str(DW_OK), "success") == 0);
    CHECK(strcmp(dw_result_str(DW_READ_ONLY + 1), "unknown result code") == 0);
    CHECK(strcmp(dw_result_str(-1), "unknown result code") == 0);
    /* the numbers are ABI */
    CHECK(DW_OK == 0 && DW_NOT_FOUND == 1 && DW_CONFLICT == 2 && DW_INVALID_ARGUMENT == 3);
    CHECK(DW_BUSY == 4 && DW_UNAVAILABLE == 5 && DW_NULL_PARAMETER == 6 && DW_PANIC == 7);
    CHECK(DW_INTERNAL == 8 && DW_CONFIG == 9 && DW_READ_ONLY == 10);
    CHECK(dw_last_error_message() != NULL);
}

static void open_errors(void) {
    dw_bridge *b = (dw_bridge *)SENTINEL;
    EXPECT_RC(DW_NULL_PARAMETER, dw_bridge_open(NULL, &b));
    EXPECT_MESSAGE("config_json");
    EXPECT_RC(DW_NULL_PARAMETER, dw_bridge_open("{}", NULL));
    EXPECT_MESSAGE("bridge_out");
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_bridge_open("{\"sqlite_path\": ", &b));
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_bridge_open("[1, 2]", &b));
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_bridge_open("{\"sqlite_paht\": \"x.sqlite3\"}", &b));
    EXPECT_MESSAGE("sqlite_paht");
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_bridge_open("{\"replicate\": \"yes\"}", &b));
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_bridge_open("{\"key_file\": \"/k\", \"key_env\": \"K\"}", &b));
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_bridge_open("{\"sqlite_path\": \"\xff\xfe\"}", &b));
    EXPECT_MESSAGE("UTF-8");
    EXPECT_RC(DW_CONFIG, dw_bridge_open("{\"postgres_url\": \"postgres://h:notaport/db\"}", &b));
    EXPECT_RC(DW_CONFIG, dw_bridge_open("{\"config_file\": \"/nonexistent/dualwrite.toml\"}", &b));
    /* A missing file is not created unless asked: a mistyped path is a configuration error. */
    EXPECT_RC(DW_CONFIG,
              dw_bridge_open("{\"sqlite_path\": \"/nonexistent-dir/sub/monolith.sqlite3\", "
                             "\"postgres_url\": null}",
                             &b));
    EXPECT_MESSAGE("no SQLite file at /nonexistent-dir/sub/monolith.sqlite3");
    EXPECT_RC(DW_UNAVAILABLE,
              dw_bridge_open("{\"sqlite_path\": \"/nonexistent-dir/sub/monolith.sqlite3\", "
                             "\"create\": true, \"postgres_url\": null}",
                             &b));
    CHECK(b == (dw_bridge *)SENTINEL);
}

static void null_parameters(dw_bridge *b) {
    char *out = SENTINEL;
    int deleted = 42;
    EXPECT_RC(DW_NULL_PARAMETER, dw_get(NULL, "users", "k", &out));
    EXPECT_MESSAGE("bridge");
    EXPECT_RC(DW_NULL_PARAMETER, dw_get(b, NULL, "k", &out));
    EXPECT_MESSAGE("table");
    EXPECT_RC(DW_NULL_PARAMETER, dw_get(b, "users", NULL, &out));
    EXPECT_MESSAGE("key");
    EXPECT_RC(DW_NULL_PARAMETER, dw_get(b, "users", "k", NULL));
    EXPECT_MESSAGE("row_json_out");

    EXPECT_RC(DW_NULL_PARAMETER, dw_list(NULL, "users", NULL, &out));
    EXPECT_RC(DW_NULL_PARAMETER, dw_list(b, NULL, NULL, &out));
    EXPECT_RC(DW_NULL_PARAMETER, dw_list(b, "users", NULL, NULL));
    EXPECT_MESSAGE("rows_json_out");

    EXPECT_RC(DW_NULL_PARAMETER, dw_insert(NULL, "users", "{}", &out));
    EXPECT_RC(DW_NULL_PARAMETER, dw_insert(b, NULL, "{}", &out));
    EXPECT_RC(DW_NULL_PARAMETER, dw_insert(b, "users", NULL, &out));
    EXPECT_MESSAGE("row_json");
    EXPECT_RC(DW_NULL_PARAMETER,
              dw_insert(b, "users", "{\"email\": \"null@example.com\", \"display_name\": \"N\"}",
                        NULL));

    EXPECT_RC(DW_NULL_PARAMETER, dw_patch(NULL, "users", "k", "{}", &out));
    EXPECT_RC(DW_NULL_PARAMETER, dw_patch(b, NULL, "k", "{}", &out));
    EXPECT_RC(DW_NULL_PARAMETER, dw_patch(b, "users", NULL, "{}", &out));
    EXPECT_RC(DW_NULL_PARAMETER, dw_patch(b, "users", "k", NULL, &out));
    EXPECT_MESSAGE("changes_json");
    EXPECT_RC(DW_NULL_PARAMETER, dw_patch(b, "users", "k", "{}", NULL));

    EXPECT_RC(DW_NULL_PARAMETER, dw_delete(NULL, "users", "k", &deleted));
    EXPECT_RC(DW_NULL_PARAMETER, dw_delete(b, NULL, "k", &deleted));
    EXPECT_RC(DW_NULL_PARAMETER, dw_delete(b, "users", NULL, &deleted));
    EXPECT_RC(DW_NULL_PARAMETER, dw_delete(b, "users", "k", NULL));
    EXPECT_MESSAGE("deleted_out");

    EXPECT_RC(DW_NULL_PARAMETER, dw_flush(NULL, 10));
    EXPECT_RC(DW_NULL_PARAMETER, dw_status(NULL, &out));
    EXPECT_RC(DW_NULL_PARAMETER, dw_status(b, NULL));
    EXPECT_RC(DW_NULL_PARAMETER, dw_dead_letter_list(NULL, &out));
    EXPECT_RC(DW_NULL_PARAMETER, dw_dead_letter_list(b, NULL));
    EXPECT_RC(DW_NULL_PARAMETER, dw_dead_letter_retry(NULL, 1));
    EXPECT_RC(DW_NULL_PARAMETER, dw_dead_letter_drop(NULL, 1));
    /* dw_bridge_close(NULL) is a release, a no-op returning DW_OK: tests/c/release_null.c */
    EXPECT_RC(DW_NULL_PARAMETER, dw_call(NULL, "users.list", "{}", &out));
    EXPECT_RC(DW_NULL_PARAMETER, dw_call(b, NULL, "{}", &out));
    EXPECT_MESSAGE("operation");
    EXPECT_RC(DW_NULL_PARAMETER, dw_call(b, "users.list", NULL, &out));
    EXPECT_MESSAGE("args_json");
    EXPECT_RC(DW_NULL_PARAMETER, dw_call(b, "users.list", "{}", NULL));
    EXPECT_MESSAGE("result_json_out");

    CHECK(out == SENTINEL);
    CHECK(deleted == 42);
}

static void invalid_utf8(dw_bridge *b) {
    char *out = SENTINEL;
    int deleted = 42;
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_get(b, "users\xc3\x28", "k", &out));
    EXPECT_MESSAGE("UTF-8");
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_get(b, "users", "\xff", &out));
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_list(b, "users", "{\"where\": {\"email\": \"\xed\xa0\x80\"}}", &out));
    EXPECT_RC(DW_INVALID_ARGUMENT,
              dw_insert(b, "users", "{\"email\": \"\xc0\xafx@example.com\", \"display_name\": \"U\"}",
                        &out));
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_patch(b, "users", "\x80", "{}", &out));
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_delete(b, "\xfe", "k", &deleted));
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_call(b, "users.\xff", "{}", &out));
    CHECK(out == SENTINEL);
    CHECK(deleted == 42);
}

static void data_errors(dw_bridge *b) {
    char *out = SENTINEL;
    char *row = NULL;
    char user_id[64];
    char job[256];
    int deleted = 42;

    /* not found */
    EXPECT_RC(DW_NOT_FOUND, dw_get(b, "users", "00000000-0000-4000-8000-000000000000", &out));
    EXPECT_MESSAGE("not found");
    EXPECT_RC(DW_NOT_FOUND,
              dw_patch(b, "users", "00000000-0000-4000-8000-000000000000", "{\"display_name\": \"X\"}",
                       &out));
    EXPECT_RC(DW_NOT_FOUND, dw_dead_letter_retry(b, 987654321));
    EXPECT_RC(DW_NOT_FOUND, dw_dead_letter_drop(b, 987654321));
    EXPECT_RC(DW_NOT_FOUND, dw_get(b, "wordstat_cache", "no such key", &out));

    /* conflict: a duplicate unique key, a missing parent, a parent still referenced */
    REQUIRE_OK(dw_insert(b, "users", "{\"email\": \"dup@example.com\", \"display_name\": \"D\"}",
                         &row));
    CHECK(json_string_field(row, "id", user_id, sizeof user_id));
    dw_string_free(row);
    row = NULL;
    EXPECT_RC(DW_CONFLICT,
              dw_insert(b, "users", "{\"email\": \"dup@example.com\", \"display_name\": \"D2\"}", &out));
    EXPECT_RC(DW_CONFLICT,
              dw_insert(b, "jobs",
                        "{\"type\": \"t\", \"owner_id\": \"00000000-0000-4000-8000-000000000001\"}",
                        &out));
    snprintf(job, sizeof job, "{\"type\": \"t\", \"owner_id\": \"%s\"}", user_id);
    REQUIRE_OK(dw_insert(b, "jobs", job, &row));
    dw_string_free(row);
    row = NULL;
    EXPECT_RC(DW_CONFLICT, dw_delete(b, "users", user_id, &deleted));

    /* invalid arguments */
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_get(b, "no_such_table", "k", &out));
    EXPECT_MESSAGE("unknown table");
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_get(b, "users", "not-a-uuid", &out));
    EXPECT_RC(DW_INVALID_ARGUMENT,
              dw_insert(b, "users", "{\"email\": \"x@example.com\", \"display_name\": \"X\", \"nope\": 1}",
                        &out));
    EXPECT_RC(DW_INVALID_ARGUMENT,
              dw_insert(b, "users", "{\"email\": \"x@example.com\", \"display_name\": 7}", &out));
    EXPECT_RC(DW_INVALID_ARGUMENT,
              dw_insert(b, "users", "{\"email\": \"x@example.com\", \"display_name\": \"X\", \"role\": \"god\"}",
                        &out));
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_insert(b, "users", "[]", &out));
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_list(b, "users", "{\"limit\": -1}", &out));
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_list(b, "users", "{\"where\": {\"nope\": 1}}", &out));
    EXPECT_RC(DW_INVALID_ARGUMENT,
              dw_insert(b, "api_keys", "{\"owner_id\": \"00000000-0000-4000-8000-000000000001\", "
                                        "\"provider\": \"p\", \"secret_ciphertext\": \"\\\\x00\"}",
                        &out));
    EXPECT_MESSAGE("secret");
    /* an indexed text value PostgreSQL's btree could never hold (issue 14, item 5) */
    {
        static char long_key[4000];
        memset(long_key, 'k', 3000);
        memcpy(long_key, "{\"cache_key\": \"", 15);
        strcpy(long_key + 3000, "\", \"value\": 1, \"expires_at\": \"2030-01-01T00:00:00Z\"}");
        EXPECT_RC(DW_INVALID_ARGUMENT, dw_insert(b, "wordstat_cache", long_key, &out));
        EXPECT_MESSAGE("wordstat_cache.cache_key");
        EXPECT_MESSAGE("2600 bytes");
    }
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_call(b, "no_such.operation", "{}", &out));
    EXPECT_MESSAGE("unknown operation");
    CHECK(out == SENTINEL);
    CHECK(deleted == 42);
}

static void sqlite_only_errors(const char *config) {
    dw_bridge *b = NULL;
    char *out = SENTINEL;
    char *row = NULL;
    char user_id[64];
    char args[256];
    REQUIRE_OK(dw_bridge_open(config, &b));
    REQUIRE_OK(dw_insert(b, "users", "{\"email\": \"solo@example.com\", \"display_name\": \"S\"}", &row));
    CHECK(json_string_field(row, "id", user_id, sizeof user_id));
    dw_string_free(row);
    /* nothing replicates: a flush times out */
    EXPECT_RC(DW_UNAVAILABLE, dw_flush(b, 50));
    EXPECT_MESSAGE("pending");
    /* no secret key configured: the api_keys operations say so */
    snprintf(args, sizeof args, "{\"owner_id\": \"%s\", \"provider\": \"serpapi\", \"secret\": \"s3cr3t\"}",
             user_id);
    EXPECT_RC(DW_CONFIG, dw_call(b, "api_keys.put", args, &out));
    CHECK(strstr(dw_last_error_message(), "s3cr3t") == NULL);
    CHECK(out == SENTINEL);
    /* closing a bridge that does not replicate has nothing to wait for */
    EXPECT_RC(DW_OK, dw_bridge_close(b, 0));
    dw_bridge_free(b);
}

int main(int argc, char **argv) {
    dw_bridge *b = NULL;
    if (argc != 3) {
        fprintf(stderr, "usage: %s CONFIG_JSON SQLITE_ONLY_CONFIG_JSON\n", argv[0]);
        return 2;
    }
    result_strings();
    open_errors();
    REQUIRE_OK(dw_bridge_open(argv[1], &b));
    null_parameters(b);
    invalid_utf8(b);
    data_errors(b);
    sqlite_only_errors(argv[2]);
    /* a success clears the message */
    REQUIRE_OK(dw_flush(b, 60000));
    CHECK(strcmp(dw_last_error_message(), "") == 0);
    EXPECT_RC(DW_OK, dw_bridge_close(b, 10000));
    dw_bridge_free(b);
    return finish("errors");
}
