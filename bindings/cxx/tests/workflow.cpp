// The C++ binding's workflow test: a user submits a SerpApi keyword job; the worker claims it,
// logs its steps, stores the SerpApi result, a page and its headings, an embedding, generated
// text and a cache entry, finishes the job and flushes to PostgreSQL. Then every kind of failure
// must throw rust::Error whose what() starts with the C ABI's code name, and a closed bridge must
// refuse work.
//
// tests/cxx_workflow.rs compiles this with -Wall -Wextra -Wpedantic -Werror and AddressSanitizer,
// links it against libdualwrite_cxx.a, runs it with the bridge's configuration JSON as argv[1],
// and checks PostgreSQL afterwards (from the ids printed as name=value lines).
#include "rust/cxx.h"
#include "dualwrite-cxx/src/lib.rs.h"

#include <cstdio>
#include <stdexcept>
#include <string>

namespace {

int checks_run = 0;
int checks_failed = 0;

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        checks_run++;                                                                       \
        if (!(cond)) {                                                                      \
            checks_failed++;                                                                \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);  \
        }                                                                                   \
    } while (0)

bool contains(const std::string &haystack, const std::string &needle) {
    return haystack.find(needle) != std::string::npos;
}

bool starts_with(const std::string &s, const std::string &prefix) { return s.rfind(prefix, 0) == 0; }

// The string value of "name" in compact JSON (serde_json output), e.g. a row's "id".
std::string field(const std::string &json, const std::string &name) {
    const std::string pattern = "\"" + name + "\":\"";
    const std::size_t start = json.find(pattern);
    if (start == std::string::npos) {
        throw std::runtime_error("no string field " + name + " in " + json);
    }
    const std::size_t from = start + pattern.size();
    return json.substr(from, json.find('"', from) - from);
}

// Run `f`; return what() of the rust::Error it throws, or "" when it does not throw.
template <typename F>
std::string error_of(F f) {
    try {
        f();
    } catch (const rust::Error &e) {
        return e.what();
    }
    return "";
}

std::string str(const rust::String &s) { return std::string(s); }

int run(const char *config_json) {
    rust::Box<dualwrite::Bridge> db = dualwrite::Bridge::open(config_json);

    // The user and the API key their jobs use.
    const std::string user_id = field(str(db->call(
        "users.create", R"({"email": "cpp-editor@example.com", "display_name": "C++ editor"})")), "id");
    const std::string key = str(db->call(
        "api_keys.put", "{\"owner_id\": \"" + user_id + "\", \"provider\": \"serpapi\", \"secret\": \"cpp-s3cret\"}"));
    CHECK(!contains(key, "cpp-s3cret"));

    // The job: submitted, claimed by the worker, logged.
    const std::string job = str(db->call(
        "jobs.submit", "{\"type\": \"serp_keyword\", \"owner_id\": \"" + user_id +
                           "\", \"priority\": \"high\", \"payload\": {\"keyword\": \"cxx bindings\"}}"));
    const std::string job_id = field(job, "id");
    CHECK(field(job, "status") == "queued");
    const std::string claimed = str(db->call("jobs.claim_next", "{}"));
    CHECK(field(claimed, "id") == job_id);
    CHECK(field(claimed, "status") == "running");
    db->call("jobs.append_log", "{\"job_id\": \"" + job_id +
                                    "\", \"level\": \"info\", \"step\": \"serpapi\", \"message\": \"fetching results\"}");

    // The SerpApi result, a page from it, the page's headings, an embedding of a heading.
    const std::string serp_id = field(str(db->call(
        "serpapi.record", "{\"keyword\": \"cxx bindings\", \"params\": {\"hl\": \"en\"}, \"job_id\": \"" +
                              job_id + "\", \"raw_json\": {\"organic_results\": [{\"position\": 1}]}}")), "id");
    const std::string page_id = field(str(db->insert(
        "pages", "{\"url\": \"https://example.com/cxx\", \"title\": \"cxx\", \"lang\": \"en\", \"source_job_id\": \"" +
                     job_id + "\", \"serpapi_result_id\": \"" + serp_id + "\"}")), "id");
    CHECK(contains(str(db->get("pages", page_id)), "https://example.com/cxx"));
    const std::string embedding_id = field(str(db->call(
        "embeddings.upsert", R"({"text_hash": "cxx-h1", "model": "minilm", "vector": [0.25, 0.5, 0.75]})")), "id");
    const std::string headings = str(db->call(
        "pages.add_headings", "{\"page_id\": \"" + page_id +
                                  "\", \"headings\": [{\"level\": \"h1\", \"text\": \"Why cxx\", \"embeddings_ref\": \"" +
                                  embedding_id + "\"}, {\"level\": \"h2\", \"text\": \"How it links\"}]}"));
    const std::string heading_id = field(headings, "id");
    CHECK(contains(str(db->call("pages.list_headings", "{\"page_id\": \"" + page_id + "\"}")), "How it links"));

    // Generated text from a prompt, analytics in the cache, an audit event.
    db->call("prompts.publish", R"({"key": "section.intro", "body": "Write an intro about {kw}"})");
    db->call("generated_text.create", "{\"section_type\": \"intro\", \"content\": \"cxx makes C++ and Rust meet\", "
                                      "\"source_heading_id\": \"" + heading_id + "\", \"owner_id\": \"" + user_id +
                                      "\", \"job_id\": \"" + job_id + "\"}");
    db->call("cache.put", R"({"cache": "text_analytics", "key": "cxx:1", "value": {"words": 512}, "ttl_seconds": 3600})");
    db->insert("wordstat_cache", R"({"cache_key": "cxx:tmp", "value": {"freq": 1}, "expires_at": "2030-01-01T00:00:00Z"})");
    CHECK(db->remove("wordstat_cache", "cxx:tmp"));
    CHECK(!db->remove("wordstat_cache", "cxx:tmp"));
    db->call("audit.record", "{\"action\": \"job.submit\", \"entity\": \"jobs\", \"entity_id\": \"" + job_id +
                                 "\", \"actor_id\": \"" + user_id + "\"}");

    // The job finishes; its logs are listed through the generic API.
    db->call("jobs.set_progress", "{\"id\": \"" + job_id + "\", \"progress\": 100}");
    CHECK(field(str(db->call("jobs.set_status", "{\"id\": \"" + job_id + "\", \"status\": \"succeeded\"}")), "status") ==
          "succeeded");
    CHECK(field(str(db->patch("pages", page_id, R"({"title": "cxx, the C++/Rust bridge"})")), "title") ==
          "cxx, the C++/Rust bridge");
    const std::string logs = str(db->list("job_logs", "{\"where\": {\"job_id\": \"" + job_id + "\"}}"));
    CHECK(contains(logs, "fetching results"));
    CHECK(contains(str(db->list("users", "")), user_id));

    // Everything reaches PostgreSQL.
    db->flush(60000);
    const std::string status = str(db->status());
    CHECK(contains(status, "\"outbox_depth\":0"));
    CHECK(contains(status, "\"dead_letters\":0"));
    CHECK(contains(str(db->call("flags.get", "{}")), "\"write_mode\":\"dual\""));

    // Failures throw rust::Error named after the C result code; nothing is written by them.
    CHECK(starts_with(error_of([&] { db->get("users", "00000000-0000-4000-8000-000000000000"); }), "DW_NOT_FOUND: "));
    CHECK(starts_with(error_of([&] {
                          db->call("users.create", R"({"email": "cpp-editor@example.com", "display_name": "Twin"})");
                      }),
                      "DW_CONFLICT: "));
    CHECK(starts_with(error_of([&] { db->insert("no_such_table", "{}"); }), "DW_INVALID_ARGUMENT: "));
    CHECK(starts_with(error_of([&] { db->insert("users", "{not json"); }), "DW_INVALID_ARGUMENT: "));
    CHECK(starts_with(error_of([&] { db->call("no.such_operation", "{}"); }), "DW_INVALID_ARGUMENT: "));
    CHECK(starts_with(error_of([&] { db->call("jobs.get", R"({"id": "not-a-uuid"})"); }), "DW_INVALID_ARGUMENT: "));
    CHECK(starts_with(error_of([&] { db->call("jobs.set_progress", "{\"id\": \"" + job_id + "\", \"progress\": 5}"); }),
                      "DW_CONFLICT: "));
    CHECK(starts_with(error_of([&] {
                          db->call("flags.set", R"({"name": "write_mode", "value": "sideways", "who": "t", "why": "t"})");
                      }),
                      "DW_INVALID_ARGUMENT: "));
    // Text that is not UTF-8 is refused on the C++ side, before the call.
    bool refused = false;
    try {
        db->get("users", std::string("\xff\xfe"));
    } catch (const std::invalid_argument &) {
        refused = true;
    }
    CHECK(refused);

    std::printf("user_id=%s\njob_id=%s\npage_id=%s\n", user_id.c_str(), job_id.c_str(), page_id.c_str());

    // Close drains and stops; the bridge then refuses work until the Box is destroyed.
    db->close(10000);
    db->close(10000);
    const std::string closed = error_of([&] { db->list("users", ""); });
    CHECK(starts_with(closed, "DW_INVALID_ARGUMENT: ") && contains(closed, "closed"));
    CHECK(starts_with(error_of([&] { db->flush(10); }), "DW_INVALID_ARGUMENT: "));
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s CONFIG_JSON\n", argv[0]);
        return 2;
    }
    try {
        run(argv[1]);
    } catch (const rust::Error &e) {
        std::fprintf(stderr, "workflow: unexpected rust::Error: %s\n", e.what());
        return 2;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "workflow: unexpected exception: %s\n", e.what());
        return 2;
    }
    std::printf("workflow: %d checks, %d failed\n", checks_run, checks_failed);
    return checks_failed == 0 ? 0 : 1;
}
