/*
 * A small "legacy monolith" in C that runs the application's real workflow through dualwrite
 * (include/dualwrite.h) with dual write on, then shows what reached PostgreSQL.
 *
 * The workflow: an editor submits SerpApi keyword jobs; the worker claims each job, logs its
 * steps, stores the SerpApi result, fetches pages, extracts their headings, embeds them,
 * generates text from a prompt, caches analytics, and every step is audited. The editor's SerpApi
 * key is stored encrypted. Every write commits to SQLite (with its outbox record) before the call
 * returns; the library's replicator copies it to PostgreSQL in the background.
 *
 * Then: flush (wait until PostgreSQL has everything), switch reads to PostgreSQL with a flag
 * (flags.set read_source=postgres), count each table's rows as the library reads them back from
 * there, and switch reads back to SQLite.
 *
 * Build (scripts/demo does this, against target/release):
 *     cc -std=c11 -Wall -Wextra -O2 $(pkg-config --cflags dualwrite) examples/monolith.c \
 *        $(pkg-config --libs dualwrite) -o monolith
 * Run: ./monolith [CONFIG_JSON]. The configuration is dw_bridge_open's JSON object; by default
 * "{}": everything from the environment (DUALWRITE_SQLITE_PATH, DUALWRITE_PG_URL or the PG*
 * variables, DUALWRITE_SECRET_KEY_FILE), as the CLI reads it.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dualwrite.h"

#define KEYWORDS 5
#define PAGES_PER_RESULT 3

static dw_bridge *db = NULL;
static int writes = 0;

static void die(dw_result rc, const char *what) {
    fprintf(stderr, "monolith.c: %s failed: %s: %s\n", what, dw_result_str((int)rc), dw_last_error_message());
    exit(1);
}

/* printf into a new string (free it). */
static char *format(const char *fmt, va_list ap) {
    va_list again;
    int n;
    char *text;
    va_copy(again, ap);
    n = vsnprintf(NULL, 0, fmt, again);
    va_end(again);
    if (n < 0 || (text = malloc((size_t)n + 1)) == NULL) {
        fprintf(stderr, "monolith.c: out of memory\n");
        exit(1);
    }
    vsnprintf(text, (size_t)n + 1, fmt, ap);
    return text;
}

/* Run a typed operation with printf-formatted JSON arguments; returns the result JSON, owned by
 * the caller (free it with dw_string_free). Any failure ends the program with the library's
 * message. */
static char *call(const char *operation, const char *args_fmt, ...) {
    va_list ap;
    char *args;
    char *result = NULL;
    dw_result rc;
    va_start(ap, args_fmt);
    args = format(args_fmt, ap);
    va_end(ap);
    rc = dw_call(db, operation, args, &result);
    free(args);
    if (rc != DW_OK) {
        die(rc, operation);
    }
    return result;
}

/* A write whose result is not needed. */
static void write_op(const char *operation, const char *args_fmt, ...) {
    va_list ap;
    char *args;
    char *result = NULL;
    dw_result rc;
    va_start(ap, args_fmt);
    args = format(args_fmt, ap);
    va_end(ap);
    rc = dw_call(db, operation, args, &result);
    free(args);
    if (rc != DW_OK) {
        die(rc, operation);
    }
    writes++;
    dw_string_free(result);
}

/* Copy the string value of "field" of a compact JSON object (the library's output) into out. */
static void string_field(const char *json, const char *field, char *out, size_t size) {
    char pattern[64];
    const char *start;
    const char *end;
    snprintf(pattern, sizeof pattern, "\"%s\":\"", field);
    start = strstr(json, pattern);
    if (start == NULL || (end = strchr(start += strlen(pattern), '"')) == NULL || (size_t)(end - start) >= size) {
        fprintf(stderr, "monolith.c: no \"%s\" in %s\n", field, json);
        exit(1);
    }
    memcpy(out, start, (size_t)(end - start));
    out[end - start] = '\0';
}

/* A write that returns a row; its "id" is copied into id_out (37 bytes). */
static void create(char *id_out, const char *operation, const char *args_fmt, ...) {
    va_list ap;
    char *args;
    char *row = NULL;
    dw_result rc;
    va_start(ap, args_fmt);
    args = format(args_fmt, ap);
    va_end(ap);
    rc = dw_call(db, operation, args, &row);
    free(args);
    if (rc != DW_OK) {
        die(rc, operation);
    }
    writes++;
    string_field(row, "id", id_out, 37);
    dw_string_free(row);
}

/* How many elements a JSON array has (counts commas at depth 1, outside strings). */
static long array_length(const char *json) {
    long n = 0;
    int depth = 0;
    int in_string = 0;
    const char *p;
    for (p = json; *p; p++) {
        if (in_string) {
            if (*p == '\\' && p[1] != '\0') {
                p++;
            } else if (*p == '"') {
                in_string = 0;
            }
        } else if (*p == '"') {
            in_string = 1;
        } else if (*p == '[' || *p == '{') {
            if (++depth == 1 && p[1] != ']') {
                n = 1;
            }
        } else if (*p == ']' || *p == '}') {
            depth--;
        } else if (*p == ',' && depth == 1) {
            n++;
        }
    }
    return n;
}

/* A number in the status JSON: the first "name": after the text `after` (or from the start). */
static long long status_number(const char *status, const char *after, const char *name) {
    char pattern[96];
    const char *p = after ? strstr(status, after) : status;
    if (p == NULL) {
        return -1;
    }
    snprintf(pattern, sizeof pattern, "\"%s\":", name);
    p = strstr(p, pattern);
    return p ? atoll(p + strlen(pattern)) : -1;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void set_flag(const char *name, const char *value, const char *why) {
    char *flags = call("flags.set", "{\"name\": \"%s\", \"value\": \"%s\", \"who\": \"monolith.c\", \"why\": \"%s\"}",
                       name, value, why);
    dw_string_free(flags);
}

static void flush(void) {
    dw_result rc = dw_flush(db, 60000);
    if (rc != DW_OK) {
        die(rc, "dw_flush");
    }
}

static const char *const TABLES[] = {"users",         "api_keys",        "jobs",           "job_logs",
                                     "serpapi_results", "pages",         "headings",       "embeddings",
                                     "prompts",       "generated_text",  "text_analytics_cache",
                                     "wordstat_cache", "audit_events"};

int main(int argc, char **argv) {
    const char *config = argc > 1 ? argv[1] : "{}";
    char user[37], key[37], job[37], serp[37], page[37], embedding[37], heading[37];
    char *result;
    char *status;
    dw_result rc;
    double started, wrote, flushed;
    size_t t;
    int k, p, jobs_done = 0;

    rc = dw_bridge_open(config, &db);
    if (rc != DW_OK) {
        die(rc, "dw_bridge_open");
    }
    result = call("flags.get", "{}");
    printf("monolith.c: dualwrite %s, %s\n", dw_version(), strstr(result, "\"write_mode\":\"dual\"") ? "dual write on" : result);
    dw_string_free(result);

    started = now_ms();
    /* The editor, their SerpApi key (stored encrypted) and the prompt the worker uses. */
    create(user, "users.create", "{\"email\": \"c-editor@example.com\", \"display_name\": \"C editor\"}");
    create(key, "api_keys.put", "{\"owner_id\": \"%s\", \"provider\": \"serpapi\", \"secret\": \"serpapi-demo-key\"}",
           user);
    write_op("prompts.publish", "{\"key\": \"section.intro\", \"body\": \"Write an intro about {kw}\", \"updated_by\": \"%s\"}",
             user);

    /* The editor submits keyword jobs. */
    for (k = 0; k < KEYWORDS; k++) {
        create(job, "jobs.submit",
               "{\"type\": \"serp_keyword\", \"owner_id\": \"%s\", \"priority\": \"high\", "
               "\"payload\": {\"keyword\": \"c keyword %d\", \"hl\": \"en\"}}",
               user, k);
        write_op("audit.record", "{\"action\": \"job.submit\", \"entity\": \"jobs\", \"entity_id\": \"%s\", \"actor_id\": \"%s\"}",
                 job, user);
    }

    /* The worker claims jobs until the queue is empty. */
    for (;;) {
        result = call("jobs.claim_next", "{}");
        if (strcmp(result, "null") == 0) {
            dw_string_free(result);
            break;
        }
        writes++;
        string_field(result, "id", job, sizeof job);
        dw_string_free(result);
        k = jobs_done++;
        write_op("jobs.append_log", "{\"job_id\": \"%s\", \"level\": \"info\", \"step\": \"serpapi\", \"message\": \"fetching results\"}",
                 job);
        create(serp, "serpapi.record",
               "{\"keyword\": \"c keyword %d\", \"params\": {\"hl\": \"en\"}, \"job_id\": \"%s\", "
               "\"raw_json\": {\"organic_results\": [{\"position\": 1}, {\"position\": 2}, {\"position\": 3}]}}",
               k, job);
        for (p = 0; p < PAGES_PER_RESULT; p++) {
            create(page, "pages.add",
                   "{\"url\": \"https://example.com/c/%d/%d\", \"title\": \"Result %d\", \"lang\": \"en\", "
                   "\"source_job_id\": \"%s\", \"serpapi_result_id\": \"%s\"}",
                   k, p, p + 1, job, serp);
            create(embedding, "embeddings.upsert",
                   "{\"text_hash\": \"c-%d-%d\", \"model\": \"minilm\", \"vector\": [0.1, 0.2, 0.3, %d]}", k, p, p);
            create(heading, "pages.add_headings",
                   "{\"page_id\": \"%s\", \"headings\": [{\"level\": \"h1\", \"text\": \"Result %d\"}, "
                   "{\"level\": \"h2\", \"text\": \"Why it matters\", \"embeddings_ref\": \"%s\"}]}",
                   page, p + 1, embedding);
            write_op("generated_text.create",
                     "{\"section_type\": \"intro\", \"heading\": \"Why it matters\", \"content\": \"Generated text\", "
                     "\"keywords_used\": [\"c keyword %d\"], \"lang\": \"en\", \"source_heading_id\": \"%s\", "
                     "\"owner_id\": \"%s\", \"job_id\": \"%s\"}",
                     k, heading, user, job);
        }
        write_op("cache.put", "{\"cache\": \"text_analytics\", \"key\": \"c:ta:%d\", \"value\": {\"words\": 512}, \"ttl_seconds\": 86400}", k);
        write_op("cache.put", "{\"cache\": \"wordstat\", \"key\": \"c:ws:%d\", \"value\": {\"freq\": 1200}, \"ttl_seconds\": 86400}", k);
        write_op("jobs.set_progress", "{\"id\": \"%s\", \"progress\": \"100\"}", job);
        write_op("jobs.set_status", "{\"id\": \"%s\", \"status\": \"succeeded\"}", job);
        write_op("jobs.append_log", "{\"job_id\": \"%s\", \"level\": \"info\", \"step\": \"done\", \"message\": \"job finished\"}", job);
        write_op("audit.record", "{\"action\": \"job.finish\", \"entity\": \"jobs\", \"entity_id\": \"%s\", \"actor_id\": \"%s\"}",
                 job, user);
    }
    wrote = now_ms();
    printf("monolith.c: %d keyword jobs submitted and worked: %d writes committed to SQLite in %.1f ms\n", jobs_done,
           writes, wrote - started);

    flush();
    flushed = now_ms();
    status = NULL;
    rc = dw_status(db, &status);
    if (rc != DW_OK) {
        die(rc, "dw_status");
    }
    printf("monolith.c: flushed: PostgreSQL had every change %.1f ms after the last write (outbox %lld, dead letters %lld)\n",
           flushed - wrote, status_number(status, NULL, "outbox_depth"), status_number(status, NULL, "dead_letters"));
    dw_string_free(status);

    /* Read it back from PostgreSQL through the library. The flag change is itself an audited
     * write: flush it too, so no read falls back to SQLite for this process's own pending write. */
    set_flag("read_source", "postgres", "show what reached PostgreSQL");
    flush();
    printf("monolith.c: reads switched to PostgreSQL (flags.set read_source=postgres); rows read back:\n");
    for (t = 0; t < sizeof TABLES / sizeof TABLES[0]; t++) {
        char *rows = NULL;
        char counters[64];
        rc = dw_list(db, TABLES[t], "{\"limit\": 10000}", &rows);
        if (rc != DW_OK) {
            die(rc, "dw_list");
        }
        status = NULL;
        if ((rc = dw_status(db, &status)) != DW_OK) {
            die(rc, "dw_status");
        }
        snprintf(counters, sizeof counters, "\"%s\":{", TABLES[t]);
        /* The status counts, per table, the reads served by each store. */
        printf("  %-22s %5ld  from %s\n", TABLES[t], array_length(rows),
               status_number(status, counters, "postgres") > 0 ? "PostgreSQL" : "SQLite (fallback)");
        dw_string_free(status);
        dw_string_free(rows);
    }
    set_flag("read_source", "sqlite", "demo done");

    rc = dw_bridge_close(db, 10000);
    if (rc != DW_OK) {
        die(rc, "dw_bridge_close");
    }
    dw_bridge_free(db);
    printf("monolith.c: reads back on SQLite (flags.set read_source=sqlite); bridge closed\n");
    return 0;
}
