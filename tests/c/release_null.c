/*
 * Releasing NULL is a harmless no-op, as free(NULL) and sqlite3_close(NULL) are: dw_bridge_close
 * returns DW_OK (and clears the last error, as every successful call does), dw_bridge_free and
 * dw_string_free do nothing. So a cleanup path can release whatever it holds without knowing
 * which step failed. Outputs of a failed call are untouched, so the NULLs a caller initialised
 * them with are what the cleanup path releases.
 * Usage: release_null SQLITE_ONLY_CONFIG_JSON   (a bridge on a SQLite file of its own)
 */
#include "check.h"

/* The cleanup idiom the header's conventions allow: release everything, opened or not. */
static void release_all(dw_bridge *b, char *row) {
    dw_string_free(row);
    EXPECT_RC(DW_OK, dw_bridge_close(b, 1000));
    CHECK(strcmp(dw_last_error_message(), "") == 0);
    dw_bridge_free(b);
}

int main(int argc, char **argv) {
    dw_bridge *b = NULL;
    char *row = NULL;
    if (argc != 2) {
        fprintf(stderr, "usage: %s SQLITE_ONLY_CONFIG_JSON\n", argv[0]);
        return 2;
    }

    /* NULL after a failure: the close succeeds and the failure's message is gone. */
    EXPECT_RC(DW_NULL_PARAMETER, dw_get(NULL, "users", "k", &row));
    CHECK(strcmp(dw_last_error_message(), "") != 0);
    EXPECT_RC(DW_OK, dw_bridge_close(NULL, 0));
    CHECK(strcmp(dw_last_error_message(), "") == 0);
    dw_bridge_free(NULL);
    dw_string_free(NULL);

    /* An open that fails leaves the handle NULL; the cleanup path releases it all the same. */
    EXPECT_RC(DW_INVALID_ARGUMENT, dw_bridge_open("{\"sqlite_paht\": \"x\"}", &b));
    CHECK(b == NULL);
    release_all(b, row);

    /* A bridge that opened and a read that failed: the handle is real, the row still NULL. */
    REQUIRE_OK(dw_bridge_open(argv[1], &b));
    EXPECT_RC(DW_NOT_FOUND, dw_get(b, "users", "00000000-0000-4000-8000-000000000000", &row));
    CHECK(row == NULL);
    release_all(b, row);
    return finish("release_null");
}
