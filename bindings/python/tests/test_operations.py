"""Every typed repository operation through dw_call, checked against SQLite (through the API)
and PostgreSQL (with psql) after a flush."""

import pytest

import dualwrite
from conftest import KEY, psql, unique


class Recorder:
    """Calls operations and remembers which ones ran, to prove every one is reachable."""

    def __init__(self, bridge):
        self.bridge = bridge
        self.called = set()

    def __call__(self, operation, **args):
        self.called.add(operation)
        return self.bridge.call(operation, args)

    def raises(self, exc, operation, **args):
        self.called.add(operation)
        with pytest.raises(exc) as e:
            self.bridge.call(operation, args)
        return e.value


def test_every_operation_is_reachable_and_replicated(bridge, pg_url):
    call = Recorder(bridge)
    operations = call("operations")
    assert "users.create" in operations and "jobs.claim_next" in operations and "api_keys.put" in operations

    # users
    email = unique("Ann") + "@Example.com"
    user = call("users.create", email=email, display_name="Ann")
    uid = user["id"]
    assert user["email"] == email.lower() and user["role"] == "member"
    assert call("users.get", id=uid) == user
    assert call("users.get_by_email", email=email.upper())["id"] == uid
    user = call("users.update", id=uid, display_name="Ann B.", role="reviewer")
    assert (user["display_name"], user["role"]) == ("Ann B.", "reviewer")
    assert call("users.disable", id=uid)["disabled_at"] is not None
    assert uid in [u["id"] for u in call("users.list", limit=10000)]
    assert call.raises(dualwrite.NotFound, "users.get", id="00000000-0000-4000-8000-000000000000").code == 1
    call.raises(dualwrite.InvalidArgument, "users.update", id=uid, emial="typo@example.com")

    # api_keys: the secret goes in as text and comes back only through api_keys.secret
    key = call("api_keys.put", owner_id=uid, provider="serpapi", secret="s3cr3t-1", metadata={"tier": 1})
    assert "secret" not in str(key) and key["metadata"] == {"tier": 1}
    assert call("api_keys.secret", owner_id=uid, provider="serpapi") == {"secret": "s3cr3t-1"}
    rotated = call("api_keys.rotate", owner_id=uid, provider="serpapi", secret_hex="00ff10")
    assert rotated["id"] == key["id"] and rotated["rotated_at"] is not None
    assert call("api_keys.secret", owner_id=uid, provider="serpapi") == {"secret_hex": "00ff10"}
    call("api_keys.put", owner_id=uid, provider="openai", secret="sk-openai")
    assert call("api_keys.get", owner_id=uid, provider="openai")["provider"] == "openai"
    assert [k["provider"] for k in call("api_keys.list", owner_id=uid)] == ["openai", "serpapi"]
    assert call("api_keys.delete", owner_id=uid, provider="serpapi") == {"deleted": True}
    assert call("api_keys.delete", owner_id=uid, provider="serpapi") == {"deleted": False}
    err = call.raises(dualwrite.InvalidArgument, "api_keys.put", owner_id=uid, provider="x", secret=["hunter2"])
    assert "hunter2" not in err.message

    # jobs and job logs
    low = call("jobs.submit", type="serp", owner_id=uid, priority="low", payload={"kw": "a"})
    urgent = call("jobs.submit", type="serp", owner_id=uid, priority="urgent")
    assert call("jobs.get", id=low["id"])["payload"] == {"kw": "a"}
    claimed = []
    while True:
        job = call("jobs.claim_next")
        if job is None:
            break
        claimed.append(job["id"])
        assert job["status"] == "running"
    assert claimed.index(urgent["id"]) < claimed.index(low["id"])
    assert call("jobs.set_progress", id=low["id"], progress="12.5")["progress"] == "12.5"
    assert call("jobs.set_progress", id=low["id"], progress=50)["progress"] == "50"
    log1 = call("jobs.append_log", job_id=low["id"], level="info", message="step one", context={"n": 1})
    log2 = call("jobs.append_log", job_id=low["id"], level="warning", message="step two")
    assert [l["id"] for l in call("jobs.list_logs", job_id=low["id"])] == [log1["id"], log2["id"]]
    assert [l["id"] for l in call("jobs.list_logs_after", job_id=low["id"], after=log1["id"])] == [log2["id"]]
    assert call("jobs.set_status", id=low["id"], status="succeeded")["finished_at"] is not None
    call.raises(dualwrite.Conflict, "jobs.set_status", id=low["id"], status="running")
    assert {j["id"] for j in call("jobs.list_by_owner", owner_id=uid)} == {low["id"], urgent["id"]}
    assert low["id"] in [j["id"] for j in call("jobs.list_by_status", status="succeeded", limit=10000)]

    # serpapi results, pages and headings
    keyword = unique("kw")
    serp = call("serpapi.record", keyword=keyword, params={"gl": "us"}, raw_json={"organic": []}, job_id=low["id"])
    assert call("serpapi.hash", keyword=keyword, params={"gl": "us"}) == {"hash": serp["hash"]}
    assert call("serpapi.get", id=serp["id"])["keyword"] == keyword
    assert call("serpapi.get_by_hash", hash=serp["hash"])["id"] == serp["id"]
    page = call("pages.add", url="https://example.com/" + keyword, title="Example", serpapi_result_id=serp["id"])
    assert call("pages.get", id=page["id"])["title"] == "Example"
    headings = call(
        "pages.add_headings", page_id=page["id"], headings=[{"level": "h1", "text": "One"}, {"level": "h2", "text": "Two"}]
    )
    assert [h["text"] for h in call("pages.list_headings", page_id=page["id"])] == ["One", "Two"]

    # embeddings
    text_hash = unique("hash")
    emb = call("embeddings.upsert", text_hash=text_hash, model="m1", vector=[0.5, -1.25, 3.0])
    assert call("embeddings.upsert", text_hash=text_hash, model="m1", vector=[1.0, 2.0, 3.0])["id"] == emb["id"]
    assert call("embeddings.get", id=emb["id"])["vector"] == [1.0, 2.0, 3.0]
    assert call("embeddings.get_by_hash", text_hash=text_hash, model="m1")["id"] == emb["id"]

    # generated text and its review workflow
    text = call(
        "generated_text.create", section_type="intro", content="Hello", owner_id=uid, source_heading_id=headings[0]["id"]
    )
    v2 = call("generated_text.add_version", of=text["id"], content="Hello again")
    assert (v2["version"], v2["status"]) == (2, "draft")
    assert call("generated_text.set_status", id=v2["id"], status="in_review")["status"] == "in_review"
    call.raises(dualwrite.Conflict, "generated_text.set_status", id=v2["id"], status="published")
    assert call("generated_text.get", id=v2["id"])["content"] == "Hello again"
    assert len(call("generated_text.list_by_heading", heading_id=headings[0]["id"])) == 2
    assert len(call("generated_text.list_by_owner", owner_id=uid)) == 2

    # prompts
    pkey = unique("prompt")
    call("prompts.publish", key=pkey, body="v1", updated_by=uid)
    assert call("prompts.publish", key=pkey, body="v2")["version"] == 2
    assert call("prompts.latest", key=pkey)["body"] == "v2"
    assert call("prompts.version", key=pkey, version=1)["body"] == "v1"
    assert [p["version"] for p in call("prompts.list_versions", key=pkey)] == [1, 2]
    call.raises(dualwrite.NotFound, "prompts.latest", key=unique("none"))

    # caches
    ckey = unique("cache")
    entry = call("cache.put", cache="wordstat", key=ckey, value={"n": 1}, ttl_seconds=3600)
    assert call("cache.get", cache="wordstat", key=ckey)["value"] == {"n": 1}
    call("cache.put", cache="text_analytics", key=ckey, value=[1], ttl_seconds=0)
    call.raises(dualwrite.NotFound, "cache.get", cache="text_analytics", key=ckey)
    assert call("cache.purge_expired", cache="text_analytics")["purged"] >= 1
    assert call("cache.delete", cache="wordstat", key=ckey) == {"deleted": True}
    call.raises(dualwrite.InvalidArgument, "cache.get", cache="memcached", key=ckey)
    assert entry["cache_key"] == ckey

    # audit events
    event = call("audit.record", action="user.disabled", entity="users", entity_id=uid, actor_id=uid, metadata={"why": "test"})
    assert event["id"] in [e["id"] for e in call("audit.list_for_entity", entity="users", entity_id=uid)]
    assert event["id"] in [e["id"] for e in call("audit.list_by_actor", actor_id=uid)]

    # flags (in depth: test_flags.py); back to dual before the flush below
    assert call("flags.get")["write_mode"] == "dual"
    assert call("flags.set", name="read_source", value="shadow", who="pytest", why="operations")["read_source"] == "shadow"
    assert call("flags.rollback", who="pytest", why="operations")["write_mode"] == "sqlite"
    assert call("flags.set", name="write_mode", value="dual", who="pytest", why="operations")["write_mode"] == "dual"

    assert call.called >= set(operations), "not exercised: %s" % sorted(set(operations) - call.called)

    # Everything reached PostgreSQL, and the secret there is pgcrypto ciphertext of what was put.
    bridge.flush(timeout=60)
    assert bridge.status()["dead_letters"] == 0
    assert psql(pg_url, "SELECT role || ',' || (disabled_at IS NOT NULL) FROM users WHERE id = '%s'" % uid) == "reviewer,true"
    assert psql(pg_url, "SELECT status || ',' || progress FROM jobs WHERE id = '%s'" % low["id"]) == "succeeded,50"
    assert psql(pg_url, "SELECT count(*) FROM job_logs WHERE job_id = '%s'" % low["id"]) == "2"
    assert psql(pg_url, "SELECT count(*) FROM headings WHERE page_id = '%s'" % page["id"]) == "2"
    assert psql(pg_url, "SELECT vector::text FROM embeddings WHERE id = '%s'" % emb["id"]) == "[1,2,3]"
    assert psql(pg_url, "SELECT max(version) FROM prompts WHERE key = '%s'" % pkey) == "2"
    assert psql(pg_url, "SELECT count(*) FROM api_keys WHERE owner_id = '%s'" % uid) == "1"
    secret = psql(
        pg_url,
        "SELECT pgp_sym_decrypt(secret_ciphertext, '%s') FROM api_keys WHERE owner_id = '%s' AND provider = 'openai'"
        % (KEY, uid),
    )
    assert secret == "sk-openai"
    stored = psql(pg_url, "SELECT encode(secret_ciphertext, 'escape') FROM api_keys WHERE owner_id = '%s'" % uid)
    assert "sk-openai" not in stored
