"""The migration-phase flags through dw_call: flags.get, flags.set (guard rails, force, per-table
overrides, audit) and flags.rollback (writes keep being captured and replay after going back to
dual)."""

import pytest

import dualwrite
from conftest import psql, unique

WHO = {"who": "pytest", "why": "testing the flag operations"}


def test_a_new_file_starts_in_dual_write_with_reads_from_sqlite(bridge):
    assert bridge.call("flags.get") == {
        "write_mode": "dual",
        "read_source": "sqlite",
        "read_source_overrides": {},
        "forced_sqlite": False,
    }
    assert bridge.status()["flags"] == bridge.call("flags.get")


def test_set_changes_flags_and_records_who_and_why(bridge):
    flags = bridge.call("flags.set", name="read_source", value="shadow", **WHO)
    assert flags["read_source"] == "shadow"
    flags = bridge.call("flags.set", name="read_source:jobs", value="postgres", **WHO)
    assert flags["read_source_overrides"] == {"jobs": "postgres"}
    assert bridge.call("flags.get") == flags
    flags = bridge.call("flags.set", name="read_source:jobs", value="default", **WHO)
    assert flags["read_source_overrides"] == {}

    events = bridge.call("audit.list_for_entity", entity="dualwrite_flags")
    assert [e["metadata"]["flag"] for e in events] == ["read_source", "read_source:jobs", "read_source:jobs"]
    first = events[0]["metadata"]
    assert (first["from"], first["to"], first["who"], first["why"], first["forced"]) == (
        "sqlite",
        "shadow",
        "pytest",
        WHO["why"],
        False,
    )


@pytest.mark.parametrize(
    "args, mentions",
    [
        ({"name": "write_mode", "value": "sideways", **WHO}, "sideways"),
        ({"name": "colour", "value": "red", **WHO}, "unknown flag"),
        ({"name": "read_source:no_such_table", "value": "postgres", **WHO}, "no_such_table"),
        ({"name": "write_mode", "value": "Postgres", **WHO}, "postgres_primary"),
        ({"name": "read_source", "value": "shadow", "who": " ", "why": "x"}, "who"),
        ({"name": "read_source", "value": "shadow", "who": "t"}, "why"),
        ({"name": "read_source", "value": "shadow", "force": "yes", **WHO}, "boolean"),
        ({"name": "read_source", "value": "shadow", "forse": True, **WHO}, "forse"),
    ],
)
def test_bad_flag_changes_are_refused_and_change_nothing(bridge, args, mentions):
    with pytest.raises(dualwrite.InvalidArgument) as e:
        bridge.call("flags.set", args)
    assert mentions in e.value.message
    assert bridge.call("flags.get")["read_source"] == "sqlite"
    assert bridge.call("audit.list_for_entity", entity="dualwrite_flags") == []


def test_guard_rails_refuse_leaving_sqlite_with_a_backlog_unless_forced(config):
    # No replicator here: the outbox only grows.
    with dualwrite.Bridge(config, replicate=False) as b:
        for n in range(1001):
            b.insert("wordstat_cache", {"cache_key": unique("k%d" % n), "value": n, "expires_at": "2030-01-01T00:00:00Z"})
        with pytest.raises(dualwrite.Conflict) as e:
            b.call("flags.set", name="read_source", value="postgres", **WHO)
        assert "not replicated yet" in e.value.message and "force" in e.value.message
        assert b.call("flags.get")["read_source"] == "sqlite"
        # Shadow reads still serve SQLite: no guard.
        assert b.call("flags.set", name="read_source", value="shadow", **WHO)["read_source"] == "shadow"
        flags = b.call("flags.set", name="read_source", value="postgres", force=True, **WHO)
        assert flags["read_source"] == "postgres"
        forced = b.call("audit.list_for_entity", entity="dualwrite_flags")[-1]["metadata"]
        assert forced["forced"] is True


def test_rollback_keeps_capturing_writes_and_dual_replays_them(bridge, pg_url):
    bridge.call("flags.set", name="read_source:users", value="postgres", force=True, **WHO)
    bridge.call("flags.set", name="read_source", value="shadow", **WHO)
    flags = bridge.call("flags.rollback", **WHO)
    assert flags == {"write_mode": "sqlite", "read_source": "sqlite", "read_source_overrides": {}, "forced_sqlite": False}

    # Rolled back: the write commits to SQLite and waits in the outbox; nothing reaches PostgreSQL.
    email = unique("rollback") + "@example.com"
    user = bridge.call("users.create", email=email, display_name="Written during rollback")
    assert bridge.get("users", user["id"])["email"] == email
    with pytest.raises(dualwrite.Unavailable) as e:
        bridge.flush(timeout=0.5)
    assert "write_mode is sqlite" in e.value.message
    assert bridge.status()["outbox_depth"] > 0
    assert psql(pg_url, "SELECT count(*) FROM users WHERE email = '%s'" % email) == "0"

    # Back to dual: what PostgreSQL missed is replayed.
    assert bridge.call("flags.set", name="write_mode", value="dual", **WHO)["write_mode"] == "dual"
    bridge.flush(timeout=60)
    assert psql(pg_url, "SELECT count(*) FROM users WHERE email = '%s'" % email) == "1"
    # The flag changes themselves are audit events and replicated like any row.
    assert psql(pg_url, "SELECT count(*) FROM audit_events WHERE action = 'flags.set' AND metadata->>'who' = 'pytest' "
                "AND metadata->>'why' = '%s' AND created_at > now() - interval '1 hour'" % WHO["why"]) != "0"


def test_closing_after_a_rollback_succeeds_and_the_captured_writes_replay_later(config, pg_url):
    # A program's shutdown after a documented `dualwrite rollback` must not fail: replication is
    # paused on purpose, the writes stay captured.
    b = dualwrite.Bridge(config)
    b.call("flags.rollback", **WHO)
    email = unique("closed-after-rollback") + "@example.com"
    b.call("users.create", email=email, display_name="Written before the close")
    b.close(timeout=5)
    assert b.closed

    with dualwrite.Bridge(config) as again:
        assert again.status()["outbox_depth"] > 0
        again.call("flags.set", name="write_mode", value="dual", **WHO)
        again.flush(timeout=60)
    assert psql(pg_url, "SELECT count(*) FROM users WHERE email = '%s'" % email) == "1"


def test_rollback_needs_who_and_why(bridge):
    with pytest.raises(dualwrite.InvalidArgument):
        bridge.call("flags.rollback", who="", why="x")
    with pytest.raises(dualwrite.InvalidArgument):
        bridge.call("flags.rollback", who="x")
    assert bridge.call("flags.get")["write_mode"] == "dual"
