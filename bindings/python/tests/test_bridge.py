"""The generic API through ctypes: rows in and out, replication, errors as exceptions, threads."""

import re
import threading
from pathlib import Path

import pytest

import dualwrite
from conftest import psql, unique

ROOT = Path(__file__).resolve().parents[3]


def test_the_library_version_is_cargo_toml_s():
    cargo = re.search(r'^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
    assert dualwrite.library_version() == cargo


def test_result_codes_are_the_header_s():
    header = (ROOT / "include" / "dualwrite.h").read_text()
    codes = dict(re.findall(r"^\s*(DW_[A-Z_]+) = (\d+),", header, re.M))
    assert codes, "no result codes found in include/dualwrite.h"
    for name, value in codes.items():
        assert getattr(dualwrite, name) == int(value), name
    for code in range(int(max(codes.values(), key=int)) + 1):
        assert dualwrite.result_str(code) != "unknown result code"
    exceptions = {cls.code for cls in dualwrite.DualwriteError.__subclasses__()}
    assert exceptions == {int(v) for n, v in codes.items() if n != "DW_OK"}


def test_rows_round_trip_and_reach_postgres(bridge, pg_url):
    email = unique("ann") + "@example.com"
    user = bridge.insert("users", {"email": email, "display_name": "Ann"})
    assert user["role"] == "member" and len(user["id"]) == 36
    assert bridge.get("users", user["id"]) == user

    job = bridge.insert("jobs", {"type": "serp", "owner_id": user["id"], "payload": {"kw": ["a", 1]}})
    assert job["payload"] == {"kw": ["a", 1]}
    changed = bridge.patch("users", user["id"], {"display_name": "Ann B.", "role": "admin"})
    assert (changed["display_name"], changed["role"], changed["email"]) == ("Ann B.", "admin", email)

    rows = bridge.list("users", {"where": {"email": email}, "limit": 5})
    assert [r["id"] for r in rows] == [user["id"]]
    assert bridge.list("users", {"where": {"email": "nobody@example.com"}}) == []

    other = bridge.insert("users", {"email": unique("bob") + "@example.com", "display_name": "Bob"})
    assert bridge.delete("users", other["id"]) is True
    assert bridge.delete("users", other["id"]) is False

    bridge.flush(timeout=60)
    status = bridge.status()
    assert status["outbox_depth"] == 0 and status["dead_letters"] == 0
    assert bridge.dead_letters() == []
    assert psql(pg_url, "SELECT display_name || '/' || role FROM users WHERE id = '%s'" % user["id"]) == "Ann B./admin"
    assert psql(pg_url, "SELECT count(*) FROM users WHERE id = '%s'" % other["id"]) == "0"
    assert psql(pg_url, "SELECT payload->'kw'->>1 FROM jobs WHERE id = '%s'" % job["id"]) == "1"


def test_each_result_code_raises_its_exception(bridge, tmp_path):
    with pytest.raises(dualwrite.NotFound) as e:
        bridge.get("users", "00000000-0000-4000-8000-000000000000")
    assert e.value.code == dualwrite.DW_NOT_FOUND and "not found" in e.value.message
    with pytest.raises(dualwrite.NotFound):
        bridge.retry_dead_letter(987654321)
    with pytest.raises(dualwrite.NotFound):
        bridge.drop_dead_letter(987654321)

    email = unique("dup") + "@example.com"
    bridge.insert("users", {"email": email, "display_name": "D"})
    with pytest.raises(dualwrite.Conflict):
        bridge.insert("users", {"email": email, "display_name": "D2"})

    with pytest.raises(dualwrite.InvalidArgument) as e:
        bridge.get("users; DROP TABLE users", "k")
    assert "unknown table" in e.value.message
    with pytest.raises(dualwrite.InvalidArgument):
        bridge.insert("users", {"email": "x@example.com", "display_name": 7})
    with pytest.raises(ValueError):  # InvalidArgument is a ValueError too
        bridge.insert("users", {"email": "x@example.com", "display_name": float("nan")})
    # A NUL would cut the C string short: refused before the call.
    with pytest.raises(dualwrite.InvalidArgument):
        bridge.get("users\0; DROP TABLE users", "k")
    # Not UTF-8 (a lone surrogate, or raw bytes): refused by the library.
    with pytest.raises(dualwrite.InvalidArgument) as e:
        bridge.get("users\ud800", "k")
    assert "UTF-8" in e.value.message
    with pytest.raises(dualwrite.InvalidArgument):
        bridge.get(b"users\xff", "k")
    with pytest.raises(dualwrite.InvalidArgument):
        bridge.call("no_such.operation")

    with pytest.raises(dualwrite.ConfigError):
        dualwrite.Bridge(postgres_url="postgres://h:notaport/db")
    with pytest.raises(dualwrite.InvalidArgument):
        dualwrite.Bridge(sqlite_paht="x.sqlite3")
    with pytest.raises(dualwrite.Unavailable):
        dualwrite.Bridge(sqlite_path="/nonexistent-dir/sub/x.sqlite3", create=True, postgres_url=None)
    # A mistyped path is not a new, empty database: refused, and no file appears.
    typo = tmp_path / "monlith.sqlite3"
    with pytest.raises(dualwrite.ConfigError) as e:
        dualwrite.Bridge(sqlite_path=typo, postgres_url=None)
    assert "no SQLite file at" in e.value.message
    assert not typo.exists()

    with dualwrite.Bridge(sqlite_path=tmp_path / "solo.sqlite3", create=True, postgres_url=None,
                          key_env="DW_NO_SUCH_VAR") as solo:
        user = solo.insert("users", {"email": "solo@example.com", "display_name": "S"})
        with pytest.raises(dualwrite.Unavailable):
            solo.flush(timeout=0.05)
        with pytest.raises(dualwrite.ConfigError) as e:
            solo.call("api_keys.put", owner_id=user["id"], provider="serpapi", secret="s3cr3t")
        assert "s3cr3t" not in e.value.message


def test_a_closed_bridge_refuses_work(config):
    with dualwrite.Bridge(config) as b:
        b.insert("users", {"email": unique("c") + "@example.com", "display_name": "C"})
    assert b.closed
    with pytest.raises(dualwrite.InvalidArgument):
        b.list("users")
    b.close()  # again: nothing happens


def test_threads_share_one_bridge(bridge, pg_url):
    tag = unique("thread")
    errors = []

    def work(n):
        try:
            for i in range(25):
                row = bridge.insert("users", {"email": "%s-%d-%d@example.com" % (tag, n, i), "display_name": "T"})
                assert bridge.get("users", row["id"])["email"] == row["email"]
                with pytest.raises(dualwrite.InvalidArgument) as e:
                    bridge.get("nope_%d_%d" % (n, i), "k")
                assert "nope_%d_%d" % (n, i) in e.value.message
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    bridge.flush(timeout=60)
    assert psql(pg_url, "SELECT count(*) FROM users WHERE email LIKE '%s-%%'" % tag) == "100"


def test_a_list_too_large_for_memory_says_to_page(config):
    # Regression (issue 14, item 6): a list could return 10,000 rows of up to 8 MiB each; 40 of
    # them took 681 MB in the host. Past MAX_LIST_BYTES (64 MiB) the C ABI refuses the list
    # with DW_INVALID_ARGUMENT, which the binding raises; a page below it works.
    with dualwrite.Bridge(dict(config, replicate=False)) as b:
        job = b.insert("jobs", {"type": unique("big")})
        message = "m" * (7 << 20)
        for _ in range(10):
            b.insert("job_logs", {"job_id": job["id"], "level": "info", "message": message})
        where = {"job_id": job["id"]}
        with pytest.raises(dualwrite.InvalidArgument) as refused:
            b.list("job_logs", {"where": where, "limit": 10})
        assert "64 MiB" in str(refused.value) and "page" in str(refused.value)
        assert len(b.list("job_logs", {"where": where, "limit": 5})) == 5
        assert len(b.list("job_logs", {"where": where, "limit": 5, "offset": 5})) == 5
