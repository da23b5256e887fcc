/*
 * Shared helpers for the C ABI tests (tests/c_abi.rs compiles and runs each program).
 * Each program takes the bridge's configuration JSON as argv[1], counts its checks, prints one
 * summary line and exits non-zero if any check failed.
 */
#ifndef DW_TEST_CHECK_H
#define DW_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dualwrite.h"

static int checks_run = 0;
static int checks_failed = 0;

#define CHECK(cond)                                                                              \
    do {                                                                                         \
        checks_run++;                                                                            \
        if (!(cond)) {                                                                           \
            checks_failed++;                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__,    \
                    #cond, dw_last_error_message());                                             \
        }                                                                                        \
    } while (0)

/* A call must return `want`; on a mismatch, say what came back and why. */
#define EXPECT_RC(want, call)                                                                    \
    do {                                                                                         \
        dw_result rc_ = (call);                                                                  \
        checks_run++;                                                                            \
        if (rc_ != (want)) {                                                                     \
            checks_failed++;                                                                     \
            fprintf(stderr, "%s:%d: %s returned %d (%s), want %d (%s); message: %s\n", __FILE__, \
                    __LINE__, #call, (int)rc_, dw_result_str((int)rc_), (int)(want),             \
                    dw_result_str((int)(want)), dw_last_error_message());                        \
        }                                                                                        \
    } while (0)

/* Like EXPECT_RC(DW_OK, call), but a failure ends the program: later steps depend on it. */
#define REQUIRE_OK(call)                                                                         \
    do {                                                                                         \
        dw_result rc_ = (call);                                                                  \
        checks_run++;                                                                            \
        if (rc_ != DW_OK) {                                                                      \
            fprintf(stderr, "%s:%d: %s returned %d (%s); message: %s\n", __FILE__, __LINE__,     \
                    #call, (int)rc_, dw_result_str((int)rc_), dw_last_error_message());          \
            exit(2);                                                                             \
        }                                                                                        \
    } while (0)

/* The last error message must mention `text`. */
#define EXPECT_MESSAGE(text)                                                                     \
    do {                                                                                         \
        checks_run++;                                                                            \
        if (strstr(dw_last_error_message(), (text)) == NULL) {                                   \
            checks_failed++;                                                                     \
            fprintf(stderr, "%s:%d: last error \"%s\" does not mention \"%s\"\n", __FILE__,      \
                    __LINE__, dw_last_error_message(), (text));                                  \
        }                                                                                        \
    } while (0)

/* Copy the string value of "field" in a compact JSON object (serde_json output) into buf. */
static inline int json_string_field(const char *json, const char *field, char *buf, size_t size) {
    char pattern[128];
    const char *start;
    const char *end;
    size_t len;
    snprintf(pattern, sizeof pattern, "\"%s\":\"", field);
    start = strstr(json, pattern);
    if (start == NULL) {
        return 0;
    }
    start += strlen(pattern);
    end = strchr(start, '"');
    if (end == NULL || (size_t)(end - start) >= size) {
        return 0;
    }
    len = (size_t)(end - start);
    memcpy(buf, start, len);
    buf[len] = '\0';
    return 1;
}

/* How many objects a compact JSON array of rows holds (counts the key column's occurrences). */
static inline int count_occurrences(const char *json, const char *needle) {
    int n = 0;
    const char *p = json;
    while ((p = strstr(p, needle)) != NULL) {
        n++;
        p += strlen(needle);
    }
    return n;
}

static inline int finish(const char *program) {
    printf("%s: %d checks, %d failed\n", program, checks_run, checks_failed);
    return checks_failed == 0 ? 0 : 1;
}

#endif
