/*
 * DW_BUSY: tests/c_abi.rs holds SQLite's write lock (BEGIN IMMEDIATE on another connection)
 * while this program writes; the write waits out the busy timeout and fails with DW_BUSY,
 * writing nothing. Reads still work (WAL).
 * Usage: busy CONFIG_JSON   (the configuration must say "migrate_sqlite": false)
 */
#include "check.h"

int main(int argc, char **argv) {
    dw_bridge *b = NULL;
    char *out = NULL;
    if (argc != 2) {
        fprintf(stderr, "usage: %s CONFIG_JSON\n", argv[0]);
        return 2;
    }
    REQUIRE_OK(dw_bridge_open(argv[1], &b));
    REQUIRE_OK(dw_list(b, "users", NULL, &out));
    dw_string_free(out);
    out = NULL;
    EXPECT_RC(DW_BUSY, dw_insert(b, "users", "{\"email\": \"busy@example.com\", \"display_name\": \"B\"}", &out));
    EXPECT_MESSAGE("busy");
    CHECK(out == NULL);
    EXPECT_RC(DW_OK, dw_bridge_close(b, 0));
    dw_bridge_free(b);
    return finish("busy");
}
