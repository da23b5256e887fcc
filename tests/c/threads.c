/*
 * One handle shared by 4 pthreads: each inserts, reads back, patches and lists its own users,
 * and provokes an error of its own to check that the last error message is per thread.
 * Usage: threads CONFIG_JSON ROWS_PER_THREAD
 * Prints inserted=N; tests/c_abi.rs checks both stores hold exactly those rows.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>

#include "check.h"

#define THREADS 4

struct worker {
    dw_bridge *bridge;
    int index;
    int rows;
    int inserted;
    int failures;
};

static void fail(struct worker *w, const char *what, dw_result rc) {
    w->failures++;
    fprintf(stderr, "thread %d: %s returned %d (%s): %s\n", w->index, what, (int)rc,
            dw_result_str((int)rc), dw_last_error_message());
}

static void *work(void *arg) {
    struct worker *w = arg;
    char json[256];
    char id[64];
    char table[32];
    char expected[64];
    char *row = NULL;
    char *rows = NULL;
    dw_result rc;
    int i;

    for (i = 0; i < w->rows; i++) {
        snprintf(json, sizeof json, "{\"email\": \"t%d-u%d@example.com\", \"display_name\": \"T%d U%d\"}",
                 w->index, i, w->index, i);
        rc = dw_insert(w->bridge, "users", json, &row);
        if (rc != DW_OK) {
            fail(w, "dw_insert", rc);
            continue;
        }
        w->inserted++;
        if (!json_string_field(row, "id", id, sizeof id)) {
            fail(w, "id in the inserted row", DW_INTERNAL);
        }
        dw_string_free(row);
        row = NULL;
        rc = dw_get(w->bridge, "users", id, &row);
        if (rc != DW_OK) {
            fail(w, "dw_get", rc);
        } else {
            snprintf(expected, sizeof expected, "\"t%d-u%d@example.com\"", w->index, i);
            if (strstr(row, expected) == NULL) {
                fail(w, "dw_get returns the row inserted", rc);
            }
            dw_string_free(row);
            row = NULL;
        }
        if (i % 5 == 0) {
            rc = dw_patch(w->bridge, "users", id, "{\"role\": \"reviewer\"}", &row);
            if (rc != DW_OK) {
                fail(w, "dw_patch", rc);
            } else {
                dw_string_free(row);
                row = NULL;
            }
        }
        if (i % 10 == 0) {
            rc = dw_list(w->bridge, "users", "{\"limit\": 5}", &rows);
            if (rc != DW_OK) {
                fail(w, "dw_list", rc);
            } else {
                dw_string_free(rows);
                rows = NULL;
            }
        }
        /* An error of this thread's own: the message must name this thread's table. */
        snprintf(table, sizeof table, "nope_%d_%d", w->index, i);
        rc = dw_get(w->bridge, table, "k", &row);
        snprintf(expected, sizeof expected, "\"%s\"", table);
        if (rc != DW_INVALID_ARGUMENT || strstr(dw_last_error_message(), expected) == NULL) {
            fail(w, "per-thread last error", rc);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    dw_bridge *b = NULL;
    pthread_t threads[THREADS];
    struct worker workers[THREADS];
    char *rows = NULL;
    char filter[64];
    int i;
    int per_thread;
    int inserted = 0;

    if (argc != 3) {
        fprintf(stderr, "usage: %s CONFIG_JSON ROWS_PER_THREAD\n", argv[0]);
        return 2;
    }
    per_thread = atoi(argv[2]);
    REQUIRE_OK(dw_bridge_open(argv[1], &b));
    for (i = 0; i < THREADS; i++) {
        workers[i].bridge = b;
        workers[i].index = i;
        workers[i].rows = per_thread;
        workers[i].inserted = 0;
        workers[i].failures = 0;
        CHECK(pthread_create(&threads[i], NULL, work, &workers[i]) == 0);
    }
    for (i = 0; i < THREADS; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0);
        CHECK(workers[i].failures == 0);
        CHECK(workers[i].inserted == per_thread);
        inserted += workers[i].inserted;
    }
    snprintf(filter, sizeof filter, "{\"limit\": %d}", THREADS * per_thread + 10);
    REQUIRE_OK(dw_list(b, "users", filter, &rows));
    CHECK(count_occurrences(rows, "\"email\":") == inserted);
    CHECK(count_occurrences(rows, "\"role\":\"reviewer\"") == THREADS * ((per_thread + 4) / 5));
    dw_string_free(rows);
    REQUIRE_OK(dw_flush(b, 120000));
    EXPECT_RC(DW_OK, dw_bridge_close(b, 10000));
    dw_bridge_free(b);
    printf("inserted=%d\n", inserted);
    return finish("threads");
}
