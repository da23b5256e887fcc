/*
 * Deliberately wrong: leaks a string the library returned. tests/c_abi.rs runs it to prove that
 * the sanitizers the other programs run under are live (LeakSanitizer must fail this program).
 * Usage: leak CONFIG_JSON
 */
#include "check.h"

static void forget_to_free(dw_bridge *b) {
    char *rows = NULL;
    REQUIRE_OK(dw_list(b, "users", NULL, &rows));
    CHECK(strcmp(rows, "[]") == 0);
}

int main(int argc, char **argv) {
    dw_bridge *b = NULL;
    if (argc != 2) {
        fprintf(stderr, "usage: %s CONFIG_JSON\n", argv[0]);
        return 2;
    }
    REQUIRE_OK(dw_bridge_open(argv[1], &b));
    forget_to_free(b);
    EXPECT_RC(DW_OK, dw_bridge_close(b, 0));
    dw_bridge_free(b);
    return finish("leak");
}
