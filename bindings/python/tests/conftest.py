"""Fixtures for the binding's tests: a real PostgreSQL database (already migrated) named by
DUALWRITE_TEST_PG_URL, and a fresh SQLite file and secret key per test.

tests/python.rs sets DUALWRITE_TEST_PG_URL and DUALWRITE_LIB and runs these tests; to run them
by hand: `pg_virtualenv -v 15 cargo test --test python`.
"""

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dualwrite  # noqa: E402

NO_PG = (
    "DUALWRITE_TEST_PG_URL is not set: these tests need a migrated PostgreSQL database. Run them "
    "through `scripts/test` or `pg_virtualenv -v 15 cargo test --test python`, which create one."
)

KEY = "python-test-key-0123456789abcdef"


@pytest.fixture(scope="session")
def pg_url() -> str:
    url = os.environ.get("DUALWRITE_TEST_PG_URL")
    if not url:
        pytest.fail(NO_PG)
    return url


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "dualwrite.key"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def config(tmp_path: Path, pg_url: str, key_file: Path) -> dict:
    return {"sqlite_path": str(tmp_path / "monolith.sqlite3"), "create": True, "postgres_url": pg_url,
            "key_file": str(key_file)}


@pytest.fixture
def bridge(config: dict):
    with dualwrite.Bridge(config) as b:
        yield b


def psql(pg_url: str, sql: str) -> str:
    """One value from PostgreSQL, read with psql (no Python driver needed)."""
    exe = shutil.which("psql")
    if exe is None:
        pytest.fail("psql is needed to check PostgreSQL (Debian package postgresql-client)")
    out = subprocess.run([exe, "-XtAq", "-d", pg_url, "-c", sql], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail("psql failed: %s" % out.stderr)
    return out.stdout.strip()


def unique(prefix: str) -> str:
    """Values that unique keys see as new: the tests share one PostgreSQL database."""
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])
