"""The library's log events reach Python's logging (DUALWRITE_LOG picks which), not stderr.

Each check runs in a child interpreter: DUALWRITE_LOG is read once per process, when the library
is loaded, and this process loaded it already.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)

CHILD = r"""
import json, logging, sys
sys.path.insert(0, sys.argv[1])
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append({"name": record.name, "level": record.levelname, "message": record.getMessage()})
logging.getLogger("dualwrite").addHandler(Keep())
logging.getLogger("dualwrite").setLevel(logging.DEBUG)
import dualwrite
if sys.argv[3] == "stderr":
    dualwrite.route_logs_to_python(False)
# A new SQLite file: opening it applies the migrations, which the library logs at info.
with dualwrite.Bridge({"sqlite_path": sys.argv[2], "create": True, "postgres_url": None, "key_env": "NO_KEY_HERE"}):
    pass
print(json.dumps(records))
"""


def run_child(tmp_path: Path, mode: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DUALWRITE_LOG="info", DUALWRITE_LOG_FORMAT="text")
    return subprocess.run(
        [sys.executable, "-c", CHILD, PACKAGE_DIR, str(tmp_path / ("%s.sqlite3" % mode)), mode],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_library_logs_arrive_in_python_logging_named_after_the_module(tmp_path):
    out = run_child(tmp_path, "logging")
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    migrations = [r for r in records if r["name"] == "dualwrite.migrate" and "migration applied" in r["message"]]
    assert len(migrations) >= 5, records
    assert all(r["level"] == "INFO" for r in migrations)
    assert "store=sqlite" in migrations[0]["message"]
    # Routed to logging, so not also printed by the library.
    assert "migration applied" not in out.stderr


def test_route_logs_to_python_false_sends_them_to_stderr(tmp_path):
    out = run_child(tmp_path, "stderr")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
    assert "INFO dualwrite::migrate: migration applied" in out.stderr
