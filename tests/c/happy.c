/*
 * The happy path through the C ABI: open, insert, get, list, patch, delete, flush, status, dead
 * letters, close, and use after close. Prints the ids it wrote (user_id=..., deleted_id=...) for
 * tests/c_abi.rs, which then checks PostgreSQL.
 * Usage: happy CONFIG_JSON
 */
#include "check.h"

int main(int argc, char **argv) {
    dw_bridge *bridge = NULL;
    char *row = NULL;
    char *rows = NULL;
    char *status = NULL;
    char *letters = NULL;
    char user_id[64];
    char other_id[64];
    char job_id[64];
    char filter[256];
    char version[64];
    int deleted = -1;

    if (argc != 2) {
        fprintf(stderr, "usage: %s CONFIG_JSON\n", argv[0]);
        return 2;
    }

    /* The header and the library agree on the version. */
    snprintf(version, sizeof version, "%d.%d.%d", DW_VERSION_MAJOR, DW_VERSION_MINOR,
             DW_VERSION_PATCH);
    CHECK(strcmp(dw_version(), version) == 0);

    REQUIRE_OK(dw_bridge_open(argv[1], &bridge));
    CHECK(bridge != NULL);
    CHECK(strcmp(dw_last_error_message(), "") == 0);

    /* insert: defaults, id and timestamps filled in; the stored row comes back. */
    REQUIRE_OK(dw_insert(bridge, "users",
                         "{\"email\": \"ann@example.com\", \"display_name\": \"Ann\"}", &row));
    CHECK(json_string_field(row, "id", user_id, sizeof user_id));
    CHECK(strlen(user_id) == 36);
    CHECK(strstr(row, "\"role\":\"member\"") != NULL);
    CHECK(strstr(row, "\"created_at\":\"") != NULL);
    dw_string_free(row);
    row = NULL;

    /* get */
    REQUIRE_OK(dw_get(bridge, "users", user_id, &row));
    CHECK(strstr(row, "\"email\":\"ann@example.com\"") != NULL);
    dw_string_free(row);
    row = NULL;

    /* a child row referencing it, with JSON and numeric columns */
    REQUIRE_OK(dw_insert(bridge, "users",
                         "{\"email\": \"bob@example.com\", \"display_name\": \"Bob\"}", &row));
    CHECK(json_string_field(row, "id", other_id, sizeof other_id));
    dw_string_free(row);
    row = NULL;
    snprintf(filter, sizeof filter,
             "{\"type\": \"serp\", \"owner_id\": \"%s\", \"payload\": {\"kw\": [\"a\", 1]}}",
             user_id);
    REQUIRE_OK(dw_insert(bridge, "jobs", filter, &row));
    CHECK(json_string_field(row, "id", job_id, sizeof job_id));
    CHECK(strstr(row, "\"payload\":{\"kw\":[\"a\",1]}") != NULL);
    dw_string_free(row);
    row = NULL;

    /* list: everything, then filtered and ordered */
    REQUIRE_OK(dw_list(bridge, "users", NULL, &rows));
    CHECK(count_occurrences(rows, "\"email\":") == 2);
    dw_string_free(rows);
    rows = NULL;
    REQUIRE_OK(dw_list(bridge, "users",
                       "{\"where\": {\"email\": \"bob@example.com\"}, \"order_by\": \"email\", "
                       "\"desc\": true, \"limit\": 10}",
                       &rows));
    CHECK(count_occurrences(rows, "\"email\":") == 1);
    CHECK(strstr(rows, other_id) != NULL);
    dw_string_free(rows);
    rows = NULL;
    REQUIRE_OK(dw_list(bridge, "users", "{\"where\": {\"email\": \"nobody@example.com\"}}", &rows));
    CHECK(strcmp(rows, "[]") == 0);
    dw_string_free(rows);
    rows = NULL;

    /* patch: the whole row after the change comes back */
    REQUIRE_OK(dw_patch(bridge, "users", user_id, "{\"display_name\": \"Ann B.\", \"role\": \"admin\"}",
                        &row));
    CHECK(strstr(row, "\"display_name\":\"Ann B.\"") != NULL);
    CHECK(strstr(row, "\"role\":\"admin\"") != NULL);
    CHECK(strstr(row, "\"email\":\"ann@example.com\"") != NULL);
    dw_string_free(row);
    row = NULL;
    REQUIRE_OK(dw_patch(bridge, "jobs", job_id, "{\"status\": \"running\", \"progress\": \"12.5\"}",
                        &row));
    CHECK(strstr(row, "\"progress\":\"12.5\"") != NULL);
    dw_string_free(row);
    row = NULL;

    /* delete: 1 for a row, 0 when there is none */
    REQUIRE_OK(dw_delete(bridge, "users", other_id, &deleted));
    CHECK(deleted == 1);
    deleted = -1;
    REQUIRE_OK(dw_delete(bridge, "users", other_id, &deleted));
    CHECK(deleted == 0);
    EXPECT_RC(DW_NOT_FOUND, dw_get(bridge, "users", other_id, &row));
    CHECK(row == NULL);

    /* typed operations by name */
    REQUIRE_OK(dw_call(bridge, "operations", "{}", &row));
    CHECK(strstr(row, "\"jobs.claim_next\"") != NULL);
    dw_string_free(row);
    row = NULL;
    snprintf(filter, sizeof filter, "{\"type\": \"crawl\", \"owner_id\": \"%s\", \"priority\": \"urgent\"}",
             user_id);
    REQUIRE_OK(dw_call(bridge, "jobs.submit", filter, &row));
    CHECK(strstr(row, "\"status\":\"queued\"") != NULL);
    dw_string_free(row);
    row = NULL;
    REQUIRE_OK(dw_call(bridge, "jobs.claim_next", "{}", &row));
    CHECK(strstr(row, "\"type\":\"crawl\"") != NULL);
    CHECK(strstr(row, "\"status\":\"running\"") != NULL);
    dw_string_free(row);
    row = NULL;
    REQUIRE_OK(dw_call(bridge, "jobs.claim_next", "{}", &row));
    CHECK(strcmp(row, "null") == 0);
    dw_string_free(row);
    row = NULL;
    snprintf(filter, sizeof filter, "{\"owner_id\": \"%s\", \"provider\": \"serpapi\", \"secret\": \"s3cr3t\"}",
             user_id);
    REQUIRE_OK(dw_call(bridge, "api_keys.put", filter, &row));
    CHECK(strstr(row, "s3cr3t") == NULL);
    dw_string_free(row);
    row = NULL;
    snprintf(filter, sizeof filter, "{\"owner_id\": \"%s\", \"provider\": \"serpapi\"}", user_id);
    REQUIRE_OK(dw_call(bridge, "api_keys.secret", filter, &row));
    CHECK(strcmp(row, "{\"secret\":\"s3cr3t\"}") == 0);
    dw_string_free(row);
    row = NULL;

    /* flush: everything reached PostgreSQL */
    REQUIRE_OK(dw_flush(bridge, 60000));
    REQUIRE_OK(dw_status(bridge, &status));
    CHECK(strstr(status, "\"outbox_depth\":0") != NULL);
    CHECK(strstr(status, "\"dead_letters\":0") != NULL);
    CHECK(strstr(status, "\"replicator_running\":true") != NULL);
    dw_string_free(status);
    status = NULL;
    REQUIRE_OK(dw_dead_letter_list(bridge, &letters));
    CHECK(strcmp(letters, "[]") == 0);
    dw_string_free(letters);
    letters = NULL;

    printf("user_id=%s\n", user_id);
    printf("deleted_id=%s\n", other_id);
    printf("job_id=%s\n", job_id);

    /* close drains and stops; the handle then refuses work until it is freed */
    EXPECT_RC(DW_OK, dw_bridge_close(bridge, 10000));
    EXPECT_RC(DW_OK, dw_bridge_close(bridge, 10000));
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_get(bridge, "users", user_id, &row));
    EXPECT_MESSAGE("closed");
    CHECK(row == NULL);
    EXPECT_RC(DW_INVALID_ARGUMENT,
              dw_insert(bridge, "users", "{\"email\": \"late@example.com\", \"display_name\": \"L\"}",
                        &row));
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_flush(bridge, 10));
    dw_bridge_free(bridge);
    dw_bridge_free(NULL);
    dw_string_free(NULL);
    return finish("happy");
}
