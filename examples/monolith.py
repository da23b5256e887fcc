#!/usr/bin/env python3
"""A small "legacy monolith" in Python that runs the application's real workflow through
dualwrite's Python binding (bindings/python: ctypes over the C ABI) with dual write on, then
shows what reached PostgreSQL.

The workflow: an editor submits SerpApi keyword jobs; the worker claims each job, logs its steps,
stores the SerpApi result, fetches pages, extracts their headings, embeds them, generates text
from a prompt, caches analytics, and every step is audited. The editor's SerpApi key is stored
encrypted. Then a rollback drill: one flag (flags.rollback) takes the monolith back to SQLite
only; a write made then is kept in the outbox, and going back to dual write replays it.

Run (scripts/demo does, after examples/monolith.c, on the same SQLite file):
    DUALWRITE_LIB=target/release/libdualwrite.so python3 examples/monolith.py [CONFIG_JSON]
The configuration is dw_bridge_open's JSON object; by default {}: everything from the environment
(DUALWRITE_SQLITE_PATH, DUALWRITE_PG_URL or the PG* variables, DUALWRITE_SECRET_KEY_FILE). What
reached PostgreSQL is counted with `psql -XAtqc` (the PG* variables, or DUALWRITE_PG_URL).
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bindings" / "python"))

import dualwrite  # noqa: E402

KEYWORDS = 5
PAGES_PER_RESULT = 3
WHO = "monolith.py"
TABLES = [
    "users", "api_keys", "jobs", "job_logs", "serpapi_results", "pages", "headings", "embeddings",
    "prompts", "generated_text", "text_analytics_cache", "wordstat_cache", "audit_events",
]


def psql(sql):
    """One query's output through psql, or None when psql is not there."""
    exe = shutil.which("psql")
    if exe is None:
        return None
    url = os.environ.get("DUALWRITE_PG_URL") or os.environ.get("DATABASE_URL")
    command = [exe, "-XAtq", "-F", " "] + (["-d", url] if url else []) + ["-c", sql]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def say(text):
    print("monolith.py: " + text, flush=True)


def main():
    config = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    writes = 0
    with dualwrite.Bridge(config) as db:

        def w(operation, **args):
            nonlocal writes
            writes += 1
            return db.call(operation, args)

        flags = db.call("flags.get")
        say("dualwrite %s through ctypes, write_mode=%s" % (dualwrite.library_version(), flags["write_mode"]))

        started = time.monotonic()
        editor = w("users.create", email="py-editor@example.com", display_name="Python editor")
        w("api_keys.put", owner_id=editor["id"], provider="serpapi", secret="serpapi-demo-key")
        prompt = w("prompts.publish", key="section.intro", body="Write an intro about {kw}", updated_by=editor["id"])

        for k in range(KEYWORDS):
            job = w("jobs.submit", type="serp_keyword", owner_id=editor["id"], priority="normal",
                    payload={"keyword": "python keyword %d" % k, "hl": "en"})
            w("audit.record", action="job.submit", entity="jobs", entity_id=job["id"], actor_id=editor["id"])

        done = 0
        while True:
            job = w("jobs.claim_next")
            if job is None:
                break
            keyword = job["payload"]["keyword"]
            w("jobs.append_log", job_id=job["id"], level="info", step="serpapi", message="fetching results")
            serp = w("serpapi.record", keyword=keyword, params={"hl": "en"}, job_id=job["id"],
                     raw_json={"organic_results": [{"position": n} for n in range(1, PAGES_PER_RESULT + 1)]})
            for p in range(PAGES_PER_RESULT):
                page = w("pages.add", url="https://example.com/py/%d/%d" % (done, p), title="Result %d" % (p + 1),
                         lang="en", source_job_id=job["id"], serpapi_result_id=serp["id"])
                embedding = w("embeddings.upsert", text_hash="py-%d-%d" % (done, p), model="minilm",
                              vector=[0.1, 0.2, 0.3, float(p)])
                headings = w("pages.add_headings", page_id=page["id"], headings=[
                    {"level": "h1", "text": "Result %d" % (p + 1)},
                    {"level": "h2", "text": "Why it matters", "embeddings_ref": embedding["id"]},
                ])
                w("generated_text.create", section_type="intro", heading="Why it matters",
                  content=prompt["body"].replace("{kw}", keyword), keywords_used=[keyword], lang="en",
                  source_heading_id=headings[1]["id"], owner_id=editor["id"], job_id=job["id"])
            w("cache.put", cache="text_analytics", key="py:ta:%d" % done, value={"words": 512}, ttl_seconds=86400)
            w("cache.put", cache="wordstat", key="py:ws:%d" % done, value={"freq": 1200}, ttl_seconds=86400)
            w("jobs.set_progress", id=job["id"], progress="100")
            w("jobs.set_status", id=job["id"], status="succeeded")
            w("jobs.append_log", job_id=job["id"], level="info", step="done", message="job finished")
            w("audit.record", action="job.finish", entity="jobs", entity_id=job["id"], actor_id=editor["id"])
            done += 1
        wrote = time.monotonic()
        say("%d keyword jobs submitted and worked: %d writes committed to SQLite in %.1f ms"
            % (done, writes, (wrote - started) * 1e3))

        db.flush(timeout=60)
        status = db.status()
        say("flushed: PostgreSQL had every change %.1f ms after the last write (outbox %d, dead letters %d)"
            % ((time.monotonic() - wrote) * 1e3, status["outbox_depth"], status["dead_letters"]))

        # The rollback drill.
        flags = db.call("flags.rollback", who=WHO, why="rollback drill")
        say("flags.rollback: write_mode=%s, read_source=%s (SQLite only, for every process on the file)"
            % (flags["write_mode"], flags["read_source"]))
        late = db.call("users.create", email="py-late@example.com", display_name="Written during the rollback")
        held = db.status()["outbox_depth"]
        in_pg = psql("SELECT count(*) FROM users WHERE id = '%s'" % late["id"])
        say("a write during the rollback: committed to SQLite, %d change(s) held in the outbox, in PostgreSQL: %s"
            % (held, in_pg if in_pg is not None else "(psql not found)"))
        db.call("flags.set", name="write_mode", value="dual", who=WHO, why="rollback drill over")
        db.flush(timeout=60)
        in_pg = psql("SELECT count(*) FROM users WHERE id = '%s'" % late["id"])
        say("flags.set write_mode=dual: the held changes were replayed; in PostgreSQL: %s"
            % (in_pg if in_pg is not None else "(psql not found)"))

    counts = psql(" UNION ALL ".join("SELECT '%s', count(*) FROM %s" % (t, t) for t in TABLES))
    if counts is None:
        say("psql not found: not counting PostgreSQL's rows")
        return
    say("rows in PostgreSQL now (both monoliths), by psql:")
    for line in counts.splitlines():
        table, n = line.split(" ")
        print("  %-22s %5s" % (table, n))


if __name__ == "__main__":
    try:
        main()
    except dualwrite.DualwriteError as e:
        print("monolith.py: %s (code %d)" % (e.message, e.code), file=sys.stderr)
        sys.exit(1)
