/*
 * fork() with an open bridge (a pre-fork server that opened it too early): in the child the
 * inherited handle refuses calls with DW_UNAVAILABLE, and dw_bridge_close and dw_bridge_free
 * release the child's copy quietly (DW_OK, no panic, nothing joined, nothing of the parent's
 * closed). The parent's bridge keeps working and replicating afterwards.
 * Usage: fork CONFIG_JSON   (a replicating bridge); prints parent_before=ID and parent_after=ID.
 */
#define _POSIX_C_SOURCE 200809L
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static void insert_user(dw_bridge *b, const char *email, const char *label) {
    char row[256];
    char id[64];
    char *out = NULL;
    snprintf(row, sizeof row, "{\"email\": \"%s\", \"display_name\": \"F\"}", email);
    REQUIRE_OK(dw_insert(b, "users", row, &out));
    CHECK(json_string_field(out, "id", id, sizeof id));
    printf("%s=%s\n", label, id);
    dw_string_free(out);
}

int main(int argc, char **argv) {
    dw_bridge *b = NULL;
    pid_t child;
    int status = 0;
    if (argc != 2) {
        fprintf(stderr, "usage: %s CONFIG_JSON\n", argv[0]);
        return 2;
    }
    REQUIRE_OK(dw_bridge_open(argv[1], &b));
    insert_user(b, "before-fork@example.com", "parent_before");
    fflush(stdout);

    child = fork();
    if (child < 0) {
        perror("fork");
        return 2;
    }
    if (child == 0) {
        char *out = NULL;
        EXPECT_RC(DW_UNAVAILABLE, dw_insert(b, "users", "{\"email\": \"child@example.com\", \"display_name\": \"C\"}", &out));
        EXPECT_MESSAGE("open a new bridge in the child");
        CHECK(out == NULL);
        EXPECT_RC(DW_OK, dw_bridge_close(b, 1000));
        EXPECT_RC(DW_OK, dw_bridge_close(b, 1000));
        dw_bridge_free(b);
        fflush(stderr);
        /* _exit: the child's copy of the handle is deliberately not freed (its threads and
         * connections are the parent's), so LeakSanitizer's exit check would count it. */
        _exit(checks_failed == 0 ? 0 : 1);
    }
    if (waitpid(child, &status, 0) != child) {
        perror("waitpid");
        return 2;
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* The parent's bridge is untouched: it writes, replicates and closes normally. */
    insert_user(b, "after-fork@example.com", "parent_after");
    EXPECT_RC(DW_OK, dw_bridge_close(b, 30000));
    dw_bridge_free(b);
    return finish("fork");
}
