/*
 * The library's logs reach a C host: dw_set_log_callback receives the events DUALWRITE_LOG
 * lets through (here: opening a new file applies the SQLite migrations, logged at info by
 * dualwrite::migrate); after dw_set_log_callback(NULL, NULL) they go to stderr instead.
 * argv[1]: configuration JSON; argv[2]: "callback" or "stderr"; argv[3]: the configuration of a
 * second new file, opened after the callback is removed. Also checks the version number.
 */
#include <pthread.h>

#include "check.h"

struct seen {
    pthread_mutex_t lock;
    int events;
    int migrations;
    int bad_level;
};

static void on_log(int level, const char *target, const char *message, void *user_data) {
    struct seen *s = user_data;
    pthread_mutex_lock(&s->lock);
    s->events++;
    if (level < DW_LOG_ERROR || level > DW_LOG_TRACE) s->bad_level++;
    if (level == DW_LOG_INFO && strcmp(target, "dualwrite::migrate") == 0 &&
        strstr(message, "migration applied") != NULL && strstr(message, "store=sqlite") != NULL)
        s->migrations++;
    pthread_mutex_unlock(&s->lock);
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    int use_callback = strcmp(argv[2], "callback") == 0;
    struct seen s = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0};

    CHECK(dw_version_number() == DW_VERSION_NUMBER);
    CHECK(dw_version_number() / 10000 == DW_VERSION_MAJOR);

    if (use_callback) EXPECT_RC(DW_OK, dw_set_log_callback(on_log, &s));
    dw_bridge *b = NULL;
    EXPECT_RC(DW_OK, dw_bridge_open(argv[1], &b));
    EXPECT_RC(DW_OK, dw_bridge_close(b, 1000));
    dw_bridge_free(b);

    /* Back to stderr: the callback is not called again once this returns. */
    EXPECT_RC(DW_OK, dw_set_log_callback(NULL, NULL));
    pthread_mutex_lock(&s.lock);
    int events_before = s.events;
    pthread_mutex_unlock(&s.lock);
    b = NULL;
    EXPECT_RC(DW_OK, dw_bridge_open(argv[3], &b)); /* migrates a new file: logs, but not to us */
    EXPECT_RC(DW_OK, dw_bridge_close(b, 1000));
    dw_bridge_free(b);
    pthread_mutex_lock(&s.lock);
    CHECK(s.events == events_before);
    pthread_mutex_unlock(&s.lock);

    if (use_callback) {
        CHECK(s.migrations >= 5); /* one per SQLite migration */
        CHECK(s.bad_level == 0);
    } else {
        CHECK(s.events == 0);
    }
    printf("events=%d\nmigrations=%d\n", s.events, s.migrations);
    printf("%d checks, %d failed\n", checks_run, checks_failed);
    return checks_failed == 0 ? 0 : 1;
}
