"""Python binding of dualwrite's C ABI (include/dualwrite.h), with ctypes: no compiled extension.

    import dualwrite

    with dualwrite.Bridge({"sqlite_path": "app.sqlite3", "key_file": "/etc/dw.key"}) as db:
        user = db.insert("users", {"email": "ann@example.com", "display_name": "Ann"})
        db.patch("users", user["id"], {"role": "admin"})
        job = db.call("jobs.claim_next")
        db.flush(timeout=30)

The library is found through the ``DUALWRITE_LIB`` environment variable (the path of
libdualwrite.so), else beside this package (``dualwrite/libdualwrite.so`` or the directory that
holds the package), else as installed by ``scripts/install`` (``libdualwrite.so.0``, wherever the
dynamic loader finds it: ``LD_LIBRARY_PATH``, ``/usr/local/lib`` after ``ldconfig``). Every failure raises a subclass of :class:`DualwriteError` named after the C
result code (:class:`NotFound`, :class:`Conflict`, :class:`InvalidArgument`, ...), carrying the
library's message. A :class:`Bridge` may be shared by threads.

The library's log events go to Python's :mod:`logging`, to the ``dualwrite`` logger and its
children named after the library's modules (``dualwrite.replicator``, ``dualwrite.reads``, ...).
Which events the library sends is set by the ``DUALWRITE_LOG`` environment variable (default
``warn``; e.g. ``DUALWRITE_LOG=debug``), read when the library is loaded; logging's own levels
and handlers apply on top. :func:`route_logs_to_python` (``False``) sends them to stderr instead.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

__all__ = [
    "Bridge",
    "DualwriteError",
    "NotFound",
    "Conflict",
    "InvalidArgument",
    "Busy",
    "Unavailable",
    "NullParameter",
    "Panic",
    "InternalError",
    "ConfigError",
    "ReadOnly",
    "library_version",
    "load_library",
    "route_logs_to_python",
]

# dw_result (include/dualwrite.h): the numbers are ABI and never change.
DW_OK = 0
DW_NOT_FOUND = 1
DW_CONFLICT = 2
DW_INVALID_ARGUMENT = 3
DW_BUSY = 4
DW_UNAVAILABLE = 5
DW_NULL_PARAMETER = 6
DW_PANIC = 7
DW_INTERNAL = 8
DW_CONFIG = 9
DW_READ_ONLY = 10


class DualwriteError(Exception):
    """A dw_* call failed. ``code`` is the dw_result, ``message`` the library's explanation."""

    code = -1

    def __init__(self, message: str, code: Optional[int] = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotFound(DualwriteError):
    """DW_NOT_FOUND: the addressed row (or dead letter) does not exist."""

    code = DW_NOT_FOUND


class Conflict(DualwriteError):
    """DW_CONFLICT: the change breaks a rule of the data; nothing was written."""

    code = DW_CONFLICT


class InvalidArgument(DualwriteError, ValueError):
    """DW_INVALID_ARGUMENT: the input can never succeed as given; nothing was written."""

    code = DW_INVALID_ARGUMENT


class Busy(DualwriteError):
    """DW_BUSY: SQLite stayed locked by another writer; retrying later may succeed."""

    code = DW_BUSY


class Unavailable(DualwriteError):
    """DW_UNAVAILABLE: a store or resource is not reachable now (or a flush timed out)."""

    code = DW_UNAVAILABLE


class NullParameter(DualwriteError):
    """DW_NULL_PARAMETER: a required pointer was NULL (a bug in this binding)."""

    code = DW_NULL_PARAMETER


class Panic(DualwriteError):
    """DW_PANIC: a bug inside the library was caught at the C boundary."""

    code = DW_PANIC


class InternalError(DualwriteError):
    """DW_INTERNAL: a bug or an impossible state inside the library."""

    code = DW_INTERNAL


class ConfigError(DualwriteError):
    """DW_CONFIG: the configuration is wrong or incomplete (URL, secret key, schema version)."""

    code = DW_CONFIG


class ReadOnly(DualwriteError):
    """DW_READ_ONLY: writes are switched off (write_mode read_only, the monolith's decommission); reads work."""

    code = DW_READ_ONLY


_ERRORS = {
    cls.code: cls
    for cls in (
        NotFound,
        Conflict,
        InvalidArgument,
        Busy,
        Unavailable,
        NullParameter,
        Panic,
        InternalError,
        ConfigError,
        ReadOnly,
    )
}

_LIB_NAME = "libdualwrite.so"
# The SONAME of the major version this binding speaks (scripts/install makes the symlink).
_INSTALLED_NAME = "libdualwrite.so.0"
_lib: Optional[ctypes.CDLL] = None


def _candidates() -> List[Path]:
    env = os.environ.get("DUALWRITE_LIB")
    if env:
        return [Path(env)]
    here = Path(__file__).resolve().parent
    return [here / _LIB_NAME, here.parent / _LIB_NAME]


def load_library() -> ctypes.CDLL:
    """Load libdualwrite (once) and declare the C signatures."""
    global _lib
    if _lib is not None:
        return _lib
    tried = _candidates()
    path = next((p for p in tried if p.is_file()), None)
    if path is not None:
        lib = ctypes.CDLL(str(path))
    elif os.environ.get("DUALWRITE_LIB"):
        raise ImportError("DUALWRITE_LIB=%s: no such file" % os.environ["DUALWRITE_LIB"])
    else:
        try:
            lib = ctypes.CDLL(_INSTALLED_NAME)
        except OSError as e:
            raise ImportError(
                "libdualwrite not found (tried %s, and %s through the dynamic loader: %s); install it "
                "with scripts/install, or build it with `cargo build --lib` and set DUALWRITE_LIB to "
                "target/debug/libdualwrite.so" % (", ".join(str(p) for p in tried), _INSTALLED_NAME, e)
            ) from None
    bridge = ctypes.c_void_p
    text = ctypes.c_char_p
    out_text = ctypes.POINTER(ctypes.c_void_p)
    signatures = {
        "dw_version": ([], ctypes.c_char_p),
        "dw_last_error_message": ([], ctypes.c_char_p),
        "dw_result_str": ([ctypes.c_int], ctypes.c_char_p),
        "dw_string_free": ([ctypes.c_void_p], None),
        "dw_bridge_open": ([text, ctypes.POINTER(ctypes.c_void_p)], ctypes.c_int),
        "dw_bridge_close": ([bridge, ctypes.c_uint32], ctypes.c_int),
        "dw_bridge_free": ([bridge], None),
        "dw_get": ([bridge, text, text, out_text], ctypes.c_int),
        "dw_list": ([bridge, text, text, out_text], ctypes.c_int),
        "dw_insert": ([bridge, text, text, out_text], ctypes.c_int),
        "dw_patch": ([bridge, text, text, text, out_text], ctypes.c_int),
        "dw_delete": ([bridge, text, text, ctypes.POINTER(ctypes.c_int)], ctypes.c_int),
        "dw_flush": ([bridge, ctypes.c_uint32], ctypes.c_int),
        "dw_status": ([bridge, out_text], ctypes.c_int),
        "dw_dead_letter_list": ([bridge, out_text], ctypes.c_int),
        "dw_dead_letter_retry": ([bridge, ctypes.c_int64], ctypes.c_int),
        "dw_dead_letter_drop": ([bridge, ctypes.c_int64], ctypes.c_int),
        "dw_call": ([bridge, text, text, out_text], ctypes.c_int),
        "dw_version_number": ([], ctypes.c_uint32),
        "dw_set_log_callback": ([_LOG_CALLBACK, ctypes.c_void_p], ctypes.c_int),
    }
    for name, (argtypes, restype) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = restype
    _lib = lib
    route_logs_to_python(True)
    return lib


# dw_log_callback: (level, target, message, user_data). The levels are DW_LOG_ERROR (1) ..
# DW_LOG_TRACE (5); TRACE maps to 5, below logging.DEBUG.
_LOG_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)
_LEVELS = {1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: logging.DEBUG, 5: 5}


def _on_log(level: int, target: bytes, message: bytes, _user_data: Any) -> None:
    # Called from the library's threads too (ctypes takes the GIL); must never raise.
    try:
        name = target.decode("utf-8", "replace").replace("::", ".")
        logger = logging.getLogger(name if name.startswith("dualwrite") else "dualwrite." + name)
        py_level = _LEVELS.get(level, logging.WARNING)
        if logger.isEnabledFor(py_level):
            logger.log(py_level, "%s", message.decode("utf-8", "replace"))
    except Exception:  # noqa: BLE001 - a log line must not break the library's thread
        pass


# Kept referenced for as long as the library may call it.
_log_callback = _LOG_CALLBACK(_on_log)


def route_logs_to_python(enabled: bool = True) -> None:
    """Send the library's log events to :mod:`logging` (the default once the library is
    loaded), or, with ``False``, back to stderr (formatted by the library: ``DUALWRITE_LOG_FORMAT``
    text or json)."""
    lib = load_library()
    _check(lib, lib.dw_set_log_callback(_log_callback if enabled else _LOG_CALLBACK(), None))


@atexit.register
def _stop_logging_into_python() -> None:
    # Before the interpreter shuts down: the library's threads (a replicator draining) must not
    # call into Python any more. ctypes releases the GIL during the call, and the library waits
    # for a callback already running to return.
    if _lib is not None:
        _lib.dw_set_log_callback(_LOG_CALLBACK(), None)


def library_version() -> str:
    """The version of the loaded library ("MAJOR.MINOR.PATCH")."""
    return load_library().dw_version().decode()


def result_str(code: int) -> str:
    """The library's static description of a result code."""
    return load_library().dw_result_str(code).decode()


def _check(lib: ctypes.CDLL, rc: int) -> None:
    if rc != DW_OK:
        # Read on the same thread right after the call: the message is thread-local.
        message = lib.dw_last_error_message().decode("utf-8", "replace")
        raise _ERRORS.get(rc, DualwriteError)(message, rc)


def _text(value: Union[str, bytes], name: str) -> bytes:
    """A NUL-terminated argument. Bytes pass as they are (the library checks UTF-8); a NUL
    would silently cut the C string short, so it is refused here."""
    data = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")
    if b"\0" in data:
        raise InvalidArgument("%s must not contain a NUL character" % name, DW_INVALID_ARGUMENT)
    return data


def _json(value: Any, name: str) -> bytes:
    if isinstance(value, (str, bytes)):
        return _text(value, name)
    try:
        return _text(json.dumps(value, allow_nan=False, ensure_ascii=False, default=_path), name)
    except (TypeError, ValueError) as e:
        raise InvalidArgument("%s cannot be sent as JSON: %s" % (name, e), DW_INVALID_ARGUMENT) from None


def _path(value: Any) -> str:
    """Paths (``pathlib.Path``) in a configuration are sent as their text."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError("%s is not JSON serializable" % type(value).__name__)


def _take_string(lib: ctypes.CDLL, ptr: ctypes.c_void_p) -> str:
    """Copy a library-owned string and free it with dw_string_free."""
    try:
        return ctypes.string_at(ptr.value).decode("utf-8")
    finally:
        lib.dw_string_free(ptr)


class Bridge:
    """An open dualwrite bridge (a ``dw_bridge``). Thread-safe; close it, or use ``with``.

    ``config`` is the JSON object of ``dw_bridge_open`` as a dict (or JSON text): ``sqlite_path``,
    ``postgres_url`` (``None`` for no PostgreSQL; left out: the PG* variables), ``key_file`` or
    ``key_env``, ``replicate``, ``migrate_sqlite``, ``config_file``. Keyword arguments are added
    to it.
    """

    def __init__(self, config: Union[Dict[str, Any], str, None] = None, **options: Any):
        self._lib = load_library()
        if isinstance(config, str):
            config = json.loads(config)
        merged = dict(config or {})
        merged.update(options)
        handle = ctypes.c_void_p()
        _check(self._lib, self._lib.dw_bridge_open(_json(merged, "config"), ctypes.byref(handle)))
        self._handle: Optional[ctypes.c_void_p] = handle

    # ----- life -----

    def close(self, timeout: float = 10.0) -> None:
        """Wait up to ``timeout`` seconds for this process's replicator to apply what was
        committed, stop it, and release the handle. Raises :class:`Unavailable` if changes were
        left in the outbox (the bridge is closed all the same), except after a rollback
        (write_mode sqlite): then replication is paused on purpose and nothing is waited for.
        Closing twice does nothing."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            _check(self._lib, self._lib.dw_bridge_close(handle, _millis(timeout)))
        finally:
            self._lib.dw_bridge_free(handle)

    @property
    def closed(self) -> bool:
        return self._handle is None

    def __enter__(self) -> "Bridge":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None:
            self._handle = None
            self._lib.dw_bridge_free(handle)

    def _h(self) -> ctypes.c_void_p:
        if self._handle is None:
            raise InvalidArgument("the bridge is closed", DW_INVALID_ARGUMENT)
        return self._handle

    def _string_call(self, fn: Any, *args: Any) -> Any:
        out = ctypes.c_void_p()
        _check(self._lib, fn(self._h(), *args, ctypes.byref(out)))
        return json.loads(_take_string(self._lib, out))

    # ----- the generic row API -----

    def get(self, table: str, key: str) -> Dict[str, Any]:
        """One row by key; :class:`NotFound` when there is none."""
        return self._string_call(self._lib.dw_get, _text(table, "table"), _text(key, "key"))

    def list(self, table: str, filter: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
        """Rows matching ``{"where": {...}, "order_by": ..., "desc": ..., "limit": ..., "offset": ...}``.

        At most 64 MiB of rows: past that, InvalidArgument says to ask for fewer and page."""
        f = None if filter is None else _json(filter, "filter")
        return self._string_call(self._lib.dw_list, _text(table, "table"), f)

    def insert(self, table: str, row: Dict[str, Any]) -> Dict[str, Any]:
        """Insert a row; returns it as stored (ids, timestamps and defaults filled in)."""
        return self._string_call(self._lib.dw_insert, _text(table, "table"), _json(row, "row"))

    def patch(self, table: str, key: str, changes: Dict[str, Any]) -> Dict[str, Any]:
        """Change some columns; returns the whole row after the change."""
        return self._string_call(
            self._lib.dw_patch, _text(table, "table"), _text(key, "key"), _json(changes, "changes")
        )

    def delete(self, table: str, key: str) -> bool:
        """Delete a row; ``False`` if there was none."""
        deleted = ctypes.c_int(-1)
        _check(
            self._lib,
            self._lib.dw_delete(self._h(), _text(table, "table"), _text(key, "key"), ctypes.byref(deleted)),
        )
        return deleted.value == 1

    # ----- typed operations -----

    def call(self, operation: str, args: Optional[Dict[str, Any]] = None, **kwargs: Any) -> Any:
        """Run a typed repository operation, e.g. ``call("users.create", email=..., display_name=...)``
        or ``call("jobs.claim_next")``. ``call("operations")`` lists them all."""
        merged = dict(args or {})
        merged.update(kwargs)
        return self._string_call(self._lib.dw_call, _text(operation, "operation"), _json(merged, "args"))

    # ----- replication -----

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every change committed so far reached PostgreSQL; :class:`Unavailable` on timeout."""
        _check(self._lib, self._lib.dw_flush(self._h(), _millis(timeout)))

    def status(self) -> Dict[str, Any]:
        """Replication health: outbox_depth, oldest_pending_ms, applied_total, dead_letters, ..."""
        return self._string_call(self._lib.dw_status)

    def dead_letters(self) -> List[Dict[str, Any]]:
        return self._string_call(self._lib.dw_dead_letter_list)

    def retry_dead_letter(self, seq: int) -> None:
        _check(self._lib, self._lib.dw_dead_letter_retry(self._h(), seq))

    def drop_dead_letter(self, seq: int) -> None:
        _check(self._lib, self._lib.dw_dead_letter_drop(self._h(), seq))


def _millis(seconds: float) -> int:
    return max(0, min(int(seconds * 1000), 2**32 - 1))
