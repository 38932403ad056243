"""tarn: Python bindings (ctypes) for tarn: an embedded JSON document store and event
bus with sessions (C ABI version 2).

Typical use::

    import tarn

    with tarn.Engine(manual_clock=0) as eng:
        v = eng.store.write("users", "alice", {"age": 30})
        doc = eng.store.read("users", "alice")
        assert doc.value == {"age": 30} and doc.version == v
        eng.store.patch("users", "alice", [{"op": "replace", "path": "/age", "value": 31}])

        # Pull events (or wait on l.fd() with select/poll), or get them by callback.
        with eng.bus.subscribe("users", "*", send_values=True) as l:
            eng.store.write("users", "bob", {"age": 40}, request_id="r1")
            ev = l.next(timeout_ms=1000)          # a tarn.Event, or None
            assert (ev.kind, ev.key, ev.value) == ("write", "bob", {"age": 40})
        cb = eng.bus.listen("*", "*", lambda ev: print(ev.kind, ev.bucket, ev.key))

        # Sessions own listeners and session-expiring keys; presence is on "$sessions".
        with eng.open_session("client-1", lease_ms=30_000) as s:
            eng.store.write("presence", "client-1", {"here": True}, session=s,
                            expire_session=True)
        # closing s removed presence/client-1 (a "session_expire" event)

The module wraps the C ABI declared in ``include/tarn.h``:

- every failing C call raises a :class:`Error` subclass carrying the status, its name
  and the library's message (``tarn_last_error()``, read on the calling thread right
  after the failing call);
- every ``tarn_buf`` the library returns is copied into Python ``bytes`` and released
  at once, so callers never free anything;
- an :class:`Engine` may be used from many Python threads at the same time (ctypes
  releases the GIL during each C call, and the library is thread-safe). Freeing it waits
  for calls still running on other threads, and every call after the free raises
  :class:`Closed` without touching the released handle.
- listeners and sessions are u64 ids held by the engine; the wrapper keeps each
  :class:`Listener` (and its ctypes callback) alive until it is closed or the engine
  is freed, and no exception raised by a callback ever reaches C (it is counted on the
  listener). Callbacks run on engine worker threads (ctypes takes the GIL for them).

The library is found through the ``TARN_LIB`` environment variable (a path), else by
searching upward from this file's directory for ``target/release/libtarn.so`` and
``target/debug/libtarn.so`` (the newer one wins), else with
``ctypes.util.find_library("tarn")``.
"""

import collections
import ctypes
import ctypes.util
import enum
import json
import operator
import os
import sys
import threading

__all__ = [
    "ABI_VERSION",
    "Status",
    "Error",
    "NotFound",
    "Exists",
    "InvalidArgument",
    "NullArgument",
    "InvalidUtf8",
    "InvalidJson",
    "InvalidPatch",
    "PatchPathNotFound",
    "PatchTestFailed",
    "VersionConflict",
    "TooLarge",
    "Full",
    "Timeout",
    "NotSupported",
    "Closed",
    "Panic",
    "TooOld",
    "Engine",
    "Store",
    "Clock",
    "Bus",
    "Session",
    "Listener",
    "ListenerStats",
    "Event",
    "Document",
    "Patched",
    "SESSIONS_BUCKET",
    "version",
    "abi_version",
    "status_name",
    "library_path",
]

# ---------------------------------------------------------------------------------------
# Constants: every #define and every tarn_status value of include/tarn.h.
# ---------------------------------------------------------------------------------------

#: The C ABI version this module was written against (``TARN_ABI_VERSION``).
TARN_ABI_VERSION = 2
ABI_VERSION = TARN_ABI_VERSION

#: ``tarn_listen_options.flags``: deliver document and signal values.
TARN_LISTEN_SEND_VALUES = 1
#: ``tarn_listen_options.flags``: skip changes made by the listener's own session.
TARN_LISTEN_IGNORE_OWN = 2
#: ``tarn_listen_options.flags``: at the bound, block the publisher (up to
#: ``block_timeout_ms``) instead of dropping and counting.
TARN_LISTEN_BLOCK = 4
#: ``tarn_listen_options.flags``: first deliver every retained change after
#: ``from_version`` (TARN_TOO_OLD if the change log no longer has them).
TARN_LISTEN_FROM_VERSION = 8
#: ``tarn_write_options.flags``: fail with TARN_EXISTS if the key holds a live document.
TARN_WRITE_FAIL_IF_EXISTS = 1
#: ``tarn_write_options.flags``: write only if the current version is ``if_version``.
TARN_WRITE_IF_VERSION = 2
#: ``tarn_write_options.flags``: remove the document when the writing session
#: (``meta.session``, required) closes.
TARN_WRITE_EXPIRE_SESSION = 4
#: ``tarn_patch_options.flags``: do not return the patched document.
TARN_PATCH_REMOVE_DATA_FROM_REPLY = 1
#: ``tarn_patch_options.flags``: patch only if the current version is ``if_version``.
TARN_PATCH_IF_VERSION = 2
#: ``tarn_remove_options.flags``: remove only if the current version is ``if_version``.
TARN_REMOVE_IF_VERSION = 1
#: ``tarn_store_list`` flags: list keys only.
TARN_LIST_KEYS_ONLY = 1
#: Longest client id of a session, in bytes (``TARN_MAX_CLIENT_ID_BYTES``).
TARN_MAX_CLIENT_ID_BYTES = MAX_CLIENT_ID_BYTES = 256
#: Most bytes of documents the change log keeps (``TARN_CHANGE_LOG_BYTES``).
TARN_CHANGE_LOG_BYTES = 64 << 20
#: The system bucket where sessions opening and closing are published.
SESSIONS_BUCKET = "$sessions"


class Status(enum.IntEnum):
    """The values of the C enum ``tarn_status`` (``TARN_`` prefix dropped)."""

    OK = 0
    NOT_FOUND = 1
    EXISTS = 2
    INVALID_ARGUMENT = 3
    NULL_ARGUMENT = 4
    INVALID_UTF8 = 5
    INVALID_JSON = 6
    INVALID_PATCH = 7
    PATCH_PATH_NOT_FOUND = 8
    PATCH_TEST_FAILED = 9
    VERSION_CONFLICT = 10
    TOO_LARGE = 11
    FULL = 12
    TIMEOUT = 13
    NOT_SUPPORTED = 14
    CLOSED = 15
    PANIC = 16
    TOO_OLD = 17


OK = TARN_OK = Status.OK
NOT_FOUND = TARN_NOT_FOUND = Status.NOT_FOUND
EXISTS = TARN_EXISTS = Status.EXISTS
INVALID_ARGUMENT = TARN_INVALID_ARGUMENT = Status.INVALID_ARGUMENT
NULL_ARGUMENT = TARN_NULL_ARGUMENT = Status.NULL_ARGUMENT
INVALID_UTF8 = TARN_INVALID_UTF8 = Status.INVALID_UTF8
INVALID_JSON = TARN_INVALID_JSON = Status.INVALID_JSON
INVALID_PATCH = TARN_INVALID_PATCH = Status.INVALID_PATCH
PATCH_PATH_NOT_FOUND = TARN_PATCH_PATH_NOT_FOUND = Status.PATCH_PATH_NOT_FOUND
PATCH_TEST_FAILED = TARN_PATCH_TEST_FAILED = Status.PATCH_TEST_FAILED
VERSION_CONFLICT = TARN_VERSION_CONFLICT = Status.VERSION_CONFLICT
TOO_LARGE = TARN_TOO_LARGE = Status.TOO_LARGE
FULL = TARN_FULL = Status.FULL
TIMEOUT = TARN_TIMEOUT = Status.TIMEOUT
NOT_SUPPORTED = TARN_NOT_SUPPORTED = Status.NOT_SUPPORTED
CLOSED = TARN_CLOSED = Status.CLOSED
PANIC = TARN_PANIC = Status.PANIC
TOO_OLD = TARN_TOO_OLD = Status.TOO_OLD

#: ``tarn_status_ALL``: every status, in order.
tarn_status_ALL = STATUS_ALL = tuple(Status)

_U32_MAX = (1 << 32) - 1
_U64_MAX = (1 << 64) - 1
_SIZE_MAX = (1 << (8 * ctypes.sizeof(ctypes.c_size_t))) - 1

# ---------------------------------------------------------------------------------------
# C types.
# ---------------------------------------------------------------------------------------


class tarn_engine(ctypes.Structure):
    """Opaque ``struct tarn_engine``."""


class tarn_engine_builder(ctypes.Structure):
    """Opaque ``struct tarn_engine_builder``."""


class tarn_buf(ctypes.Structure):
    """``struct tarn_buf``: bytes owned by the library until ``tarn_buf_free``."""

    _fields_ = [
        ("data", ctypes.POINTER(ctypes.c_uint8)),
        ("len", ctypes.c_size_t),
        ("_owner", ctypes.c_void_p),
    ]


class tarn_doc_info(ctypes.Structure):
    """``struct tarn_doc_info``: a document's metadata."""

    _fields_ = [
        ("version", ctypes.c_uint64),
        ("modified_ms", ctypes.c_uint64),
        ("expires_ms", ctypes.c_uint64),
    ]


class tarn_change_meta(ctypes.Structure):
    """``struct tarn_change_meta``: who makes a change and why (all zero: nothing).

    ``request_id`` is NUL-terminated UTF-8; ``user_data`` is JSON text of
    ``user_data_len`` bytes. Both are borrowed for the call only."""

    _fields_ = [
        ("session", ctypes.c_uint64),
        ("request_id", ctypes.c_char_p),
        ("user_data", ctypes.c_char_p),  # const uint8_t * (with user_data_len)
        ("user_data_len", ctypes.c_size_t),
    ]


class tarn_write_options(ctypes.Structure):
    """``struct tarn_write_options``."""

    _fields_ = [
        ("flags", ctypes.c_uint32),
        ("ttl_ms", ctypes.c_uint64),
        ("if_version", ctypes.c_uint64),
        ("meta", tarn_change_meta),
    ]


class tarn_patch_options(ctypes.Structure):
    """``struct tarn_patch_options``."""

    _fields_ = [
        ("flags", ctypes.c_uint32),
        ("if_version", ctypes.c_uint64),
        ("meta", tarn_change_meta),
    ]


class tarn_remove_options(ctypes.Structure):
    """``struct tarn_remove_options``."""

    _fields_ = [
        ("flags", ctypes.c_uint32),
        ("if_version", ctypes.c_uint64),
        ("meta", tarn_change_meta),
    ]


class tarn_listen_options(ctypes.Structure):
    """``struct tarn_listen_options``."""

    _fields_ = [
        ("flags", ctypes.c_uint32),
        ("capacity", ctypes.c_size_t),
        ("block_timeout_ms", ctypes.c_uint64),
        ("from_version", ctypes.c_uint64),
    ]


class tarn_listener_stats(ctypes.Structure):
    """``struct tarn_listener_stats``: a listener's counters."""

    _fields_ = [
        ("delivered", ctypes.c_uint64),
        ("missed", ctypes.c_uint64),
        ("panics", ctypes.c_uint64),
    ]


#: ``tarn_event_fn``: ``void (*)(const uint8_t *event, size_t len, void *user_data)``.
tarn_event_fn = ctypes.CFUNCTYPE(
    None, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t, ctypes.c_void_p
)


_status_t = ctypes.c_int  # enum tarn_status
_engine_p = ctypes.POINTER(tarn_engine)
_builder_p = ctypes.POINTER(tarn_engine_builder)
_u32 = ctypes.c_uint32
_u64 = ctypes.c_uint64
_u64_p = ctypes.POINTER(ctypes.c_uint64)
_size = ctypes.c_size_t
_name_t = ctypes.c_char_p  # const char * (NUL-terminated UTF-8)
_bytes_t = ctypes.c_char_p  # const uint8_t * (with a separate length)
_buf_p = ctypes.POINTER(tarn_buf)

#: name -> (restype, argtypes), for every function of include/tarn.h.
_SIGNATURES = {
    "tarn_version": (ctypes.c_char_p, []),
    "tarn_abi_version": (_u32, []),
    "tarn_buf_free": (None, [_buf_p]),
    "tarn_engine_builder_new": (_builder_p, []),
    "tarn_engine_builder_free": (None, [_builder_p]),
    "tarn_engine_builder_workers": (_status_t, [_builder_p, _u32]),
    "tarn_engine_builder_queue_capacity": (_status_t, [_builder_p, _size]),
    "tarn_engine_builder_manual_clock": (_status_t, [_builder_p, _u64]),
    "tarn_engine_builder_max_bucket_bytes": (_status_t, [_builder_p, _size]),
    "tarn_engine_builder_max_key_bytes": (_status_t, [_builder_p, _size]),
    "tarn_engine_builder_max_document_bytes": (_status_t, [_builder_p, _size]),
    "tarn_engine_builder_change_log_capacity": (_status_t, [_builder_p, _size]),
    "tarn_engine_builder_store_capacity_bytes": (_status_t, [_builder_p, _size]),
    "tarn_engine_builder_build": (_status_t, [_builder_p, ctypes.POINTER(_engine_p)]),
    "tarn_engine_new": (_status_t, [ctypes.POINTER(_engine_p)]),
    "tarn_engine_close": (_status_t, [_engine_p]),
    "tarn_engine_free": (None, [_engine_p]),
    "tarn_engine_settle": (_status_t, [_engine_p, _u64]),
    "tarn_clock_now": (_status_t, [_engine_p, _u64_p]),
    "tarn_clock_set": (_status_t, [_engine_p, _u64]),
    "tarn_clock_advance": (_status_t, [_engine_p, _u64, _u64_p]),
    "tarn_last_error": (ctypes.c_char_p, []),
    "tarn_status_name": (ctypes.c_char_p, [ctypes.c_int32]),
    "tarn_store_read": (
        _status_t,
        [_engine_p, _name_t, _name_t, _buf_p, ctypes.POINTER(tarn_doc_info)],
    ),
    "tarn_store_read_all": (_status_t, [_engine_p, _name_t, _buf_p]),
    "tarn_store_list": (_status_t, [_engine_p, _name_t, _u32, _buf_p]),
    "tarn_store_buckets": (_status_t, [_engine_p, _buf_p]),
    "tarn_store_write": (
        _status_t,
        [
            _engine_p,
            _name_t,
            _name_t,
            _bytes_t,
            _size,
            ctypes.POINTER(tarn_write_options),
            _u64_p,
        ],
    ),
    "tarn_store_patch": (
        _status_t,
        [
            _engine_p,
            _name_t,
            _name_t,
            _bytes_t,
            _size,
            ctypes.POINTER(tarn_patch_options),
            _u64_p,
            _buf_p,
        ],
    ),
    "tarn_store_remove": (
        _status_t,
        [_engine_p, _name_t, _name_t, ctypes.POINTER(tarn_remove_options), _u64_p],
    ),
    "tarn_store_last_version": (_status_t, [_engine_p, _u64_p]),
    "tarn_session_open": (_status_t, [_engine_p, _name_t, _u64, _u64_p]),
    "tarn_session_keepalive": (_status_t, [_engine_p, _u64]),
    "tarn_session_is_open": (_status_t, [_engine_p, _u64, ctypes.POINTER(ctypes.c_bool)]),
    "tarn_session_close": (_status_t, [_engine_p, _u64]),
    "tarn_bus_listen": (
        _status_t,
        [
            _engine_p,
            _u64,
            _name_t,
            _name_t,
            ctypes.POINTER(tarn_listen_options),
            tarn_event_fn,
            ctypes.c_void_p,
            _u64_p,
        ],
    ),
    "tarn_bus_subscribe": (
        _status_t,
        [_engine_p, _u64, _name_t, _name_t, ctypes.POINTER(tarn_listen_options), _u64_p],
    ),
    "tarn_listener_next": (_status_t, [_engine_p, _u64, _u64, _buf_p]),
    "tarn_listener_fd": (_status_t, [_engine_p, _u64, ctypes.POINTER(ctypes.c_int32)]),
    "tarn_listener_get_stats": (
        _status_t,
        [_engine_p, _u64, ctypes.POINTER(tarn_listener_stats)],
    ),
    "tarn_listener_free": (_status_t, [_engine_p, _u64]),
    "tarn_bus_signal": (_status_t, [_engine_p, _u64, _name_t, _name_t, _bytes_t, _size]),
}

# ---------------------------------------------------------------------------------------
# Loading the library.
# ---------------------------------------------------------------------------------------


def _shared_library_name():
    if sys.platform == "darwin":
        return "libtarn.dylib"
    if sys.platform in ("win32", "cygwin"):
        return "tarn.dll"
    return "libtarn.so"


def _find_library():
    """The path of the library to load (see the module docstring), or raise ImportError."""
    env = os.environ.get("TARN_LIB")
    if env:
        if not os.path.exists(env):
            raise ImportError(f"tarn: TARN_LIB is set to {env!r}, which does not exist")
        return env
    name = _shared_library_name()
    d = os.path.dirname(os.path.abspath(__file__))
    while True:
        found = [
            p
            for p in (
                os.path.join(d, "target", "release", name),
                os.path.join(d, "target", "debug", name),
            )
            if os.path.isfile(p)
        ]
        if found:
            # max() keeps the first of equals: release wins a tie.
            return max(found, key=os.path.getmtime)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    p = ctypes.util.find_library("tarn")
    if p:
        return p
    raise ImportError(
        "tarn: cannot find the tarn library: set TARN_LIB to the path of "
        f"{name}, or build it (`cargo build`) in a directory above "
        f"{os.path.dirname(os.path.abspath(__file__))}"
    )


def _load():
    path = _find_library()
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise ImportError(f"tarn: cannot load {path!r}: {e}") from e
    missing = [n for n in _SIGNATURES if not hasattr(lib, n)]
    if missing:
        raise ImportError(f"tarn: {path!r} lacks the functions {', '.join(missing)}")
    for fname, (restype, argtypes) in _SIGNATURES.items():
        f = getattr(lib, fname)
        f.restype = restype
        f.argtypes = argtypes
    abi = lib.tarn_abi_version()
    if abi != ABI_VERSION:
        raise ImportError(
            f"tarn: {path!r} has C ABI version {abi}, but this module needs {ABI_VERSION}"
        )
    return path, lib


_library_path, _lib = _load()


def library_path():
    """The path of the loaded tarn library (as found at import)."""
    return _library_path


def version():
    """The library's version string, such as ``"0.1.0"`` (``tarn_version``)."""
    return _lib.tarn_version().decode("utf-8")


def abi_version():
    """The library's C ABI version (``tarn_abi_version``); equals :data:`ABI_VERSION`."""
    return int(_lib.tarn_abi_version())


def status_name(status):
    """The C name of a status value, such as ``"TARN_NOT_FOUND"`` (``tarn_status_name``);
    ``"TARN_UNKNOWN_STATUS"`` for a value that is not one."""
    status = operator.index(status)
    if not -(1 << 31) <= status < (1 << 31):
        return "TARN_UNKNOWN_STATUS"
    return _lib.tarn_status_name(status).decode("utf-8")


__version__ = version()

# ---------------------------------------------------------------------------------------
# Errors.
# ---------------------------------------------------------------------------------------


class Error(Exception):
    """A failing tarn call.

    Attributes:
        status: the ``tarn_status`` value (an int; a :class:`Status` when known).
        status_name: its C name, from ``tarn_status_name`` (e.g. ``"TARN_NOT_FOUND"``).
        message: the details, from ``tarn_last_error()`` read right after the failing
            call (or written by this module for arguments it refuses before calling C).

    Each status has its own subclass (:class:`NotFound`, :class:`Exists`, ...), so
    ``except tarn.NotFound`` catches exactly that status and ``except tarn.Error`` all.
    """

    #: The status of this class (set by each subclass).
    STATUS = None

    def __init__(self, message="", status=None):
        if status is None:
            status = self.STATUS if self.STATUS is not None else -1
        status = int(status)
        try:
            status = Status(status)
        except ValueError:
            pass
        super().__init__(message, status)
        self.status = status
        self.status_name = status_name(status)
        self.message = message

    def __str__(self):
        return f"{self.status_name}: {self.message}" if self.message else self.status_name


class NotFound(Error):
    """TARN_NOT_FOUND: the bucket or key does not exist (or has expired)."""

    STATUS = Status.NOT_FOUND


class Exists(Error):
    """TARN_EXISTS: a fail-if-exists write found the key present."""

    STATUS = Status.EXISTS


class InvalidArgument(Error):
    """TARN_INVALID_ARGUMENT: an argument is outside what the function accepts."""

    STATUS = Status.INVALID_ARGUMENT


class NullArgument(Error):
    """TARN_NULL_ARGUMENT: a required pointer argument was NULL."""

    STATUS = Status.NULL_ARGUMENT


class InvalidUtf8(Error):
    """TARN_INVALID_UTF8: a name is not valid UTF-8."""

    STATUS = Status.INVALID_UTF8


class InvalidJson(Error):
    """TARN_INVALID_JSON: a document is not valid JSON (or not UTF-8)."""

    STATUS = Status.INVALID_JSON


class InvalidPatch(Error):
    """TARN_INVALID_PATCH: a patch is not a well-formed RFC 6902 operation list."""

    STATUS = Status.INVALID_PATCH


class PatchPathNotFound(Error):
    """TARN_PATCH_PATH_NOT_FOUND: a patch path (or from) does not exist."""

    STATUS = Status.PATCH_PATH_NOT_FOUND


class PatchTestFailed(Error):
    """TARN_PATCH_TEST_FAILED: a patch ``test`` operation did not match."""

    STATUS = Status.PATCH_TEST_FAILED


class VersionConflict(Error):
    """TARN_VERSION_CONFLICT: the stored version is not the one asked for."""

    STATUS = Status.VERSION_CONFLICT


class TooLarge(Error):
    """TARN_TOO_LARGE: a name or document is over its configured bound."""

    STATUS = Status.TOO_LARGE


class Full(Error):
    """TARN_FULL: a bounded resource (the store capacity) is full."""

    STATUS = Status.FULL


class Timeout(Error):
    """TARN_TIMEOUT: the operation did not complete in time."""

    STATUS = Status.TIMEOUT


class NotSupported(Error):
    """TARN_NOT_SUPPORTED: not available in this configuration (e.g. system clock)."""

    STATUS = Status.NOT_SUPPORTED


class Closed(Error):
    """TARN_CLOSED: the engine is closed (or, in Python, already freed)."""

    STATUS = Status.CLOSED


class Panic(Error):
    """TARN_PANIC: a panic was caught at the C boundary (a bug in tarn)."""

    STATUS = Status.PANIC


class TooOld(Error):
    """TARN_TOO_OLD: a listener asked to start from a version older than the change log
    keeps."""

    STATUS = Status.TOO_OLD


_ERRORS = {
    cls.STATUS: cls
    for cls in (
        NotFound,
        Exists,
        InvalidArgument,
        NullArgument,
        InvalidUtf8,
        InvalidJson,
        InvalidPatch,
        PatchPathNotFound,
        PatchTestFailed,
        VersionConflict,
        TooLarge,
        Full,
        Timeout,
        NotSupported,
        Closed,
        Panic,
        TooOld,
    )
}


def _error(status):
    """The exception for a failing status; reads tarn_last_error() (same thread)."""
    raw = _lib.tarn_last_error()
    message = raw.decode("utf-8", "replace") if raw else ""
    return _ERRORS.get(status, Error)(message, status)


def _check(status):
    if status != 0:
        raise _error(status)


# ---------------------------------------------------------------------------------------
# Argument conversion (refused here what C would misread).
# ---------------------------------------------------------------------------------------


def _name(value, what):
    """A bucket or key name: str (encoded UTF-8) or bytes (passed as is)."""
    if isinstance(value, str):
        # surrogatepass: a lone surrogate becomes bytes that are not UTF-8, which the
        # library then refuses with TARN_INVALID_UTF8.
        b = value.encode("utf-8", "surrogatepass")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
    else:
        raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")
    if b"\0" in b:
        raise InvalidArgument(f"{what} contains a NUL character")
    return b


def _json_text(value, what):
    """Raw JSON text: bytes-like (as is) or str (encoded UTF-8)."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


def _dumps(value):
    return json.dumps(
        value, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8", "surrogatepass")


def _uint(value, what, maximum, minimum=0):
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not bool")
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an int, not {type(value).__name__}") from None
    if not minimum <= n <= maximum:
        raise InvalidArgument(f"{what} must be in {minimum}..={maximum}, not {n}")
    return n


# ---------------------------------------------------------------------------------------
# Results.
# ---------------------------------------------------------------------------------------


class Document:
    """A document as read.

    Attributes:
        json: the stored JSON text, exactly the bytes the store holds (``bytes``).
        version: the store-wide version of the document's last change.
        modified_ms: engine-clock ms (since the Unix epoch) of the last change.
        expires_ms: engine-clock ms when it expires, or None if it never does.
        value: (property) the JSON text parsed with ``json.loads``.
    """

    __slots__ = ("json", "version", "modified_ms", "expires_ms", "_value", "_parsed")

    def __init__(self, json_bytes, version, modified_ms, expires_ms):
        self.json = json_bytes
        self.version = version
        self.modified_ms = modified_ms
        self.expires_ms = expires_ms
        self._parsed = False
        self._value = None

    @property
    def value(self):
        """The document parsed as a Python object (parsed once, then cached)."""
        if not self._parsed:
            self._value = json.loads(self.json)
            self._parsed = True
        return self._value

    def __repr__(self):
        return (
            f"tarn.Document(json={self.json!r}, version={self.version}, "
            f"modified_ms={self.modified_ms}, expires_ms={self.expires_ms})"
        )


class Patched:
    """The result of a successful patch.

    Attributes:
        version: the new version.
        json: the patched document's JSON text, or None with ``remove_data_from_reply``.
        value: (property) ``json`` parsed, or None with ``remove_data_from_reply``.
    """

    __slots__ = ("version", "json")

    def __init__(self, version, json_bytes):
        self.version = version
        self.json = json_bytes

    @property
    def value(self):
        """The patched document parsed, or None when it was not returned."""
        return None if self.json is None else json.loads(self.json)

    def __repr__(self):
        return f"tarn.Patched(version={self.version}, json={self.json!r})"


def _copy(buf):
    """The bytes of a tarn_buf the library filled in (a copy; the caller frees buf)."""
    if not buf.data or buf.len == 0:
        return b""
    return ctypes.string_at(buf.data, buf.len)


def _free(buf):
    """tarn_buf_free: releases a buffer (a zeroed one, as after a failure: no-op)."""
    _lib.tarn_buf_free(ctypes.byref(buf))


# ---------------------------------------------------------------------------------------
# Engine, store, clock.
# ---------------------------------------------------------------------------------------


class Engine:
    """One embedded tarn instance (a ``tarn_engine``).

    Args (None: the library's default):
        manual_clock: use a manual clock starting at this many ms since the Unix epoch
            (moved only by ``eng.clock.set`` / ``eng.clock.advance``); default: the
            system clock.
        workers: worker threads (1..256).
        queue_capacity: bound of the worker pool's queue (>= 1).
        max_bucket_bytes, max_key_bytes, max_document_bytes: size bounds (>= 1).
        store_capacity_bytes: total bytes of keys and documents the store may hold.
        change_log_capacity: how many store changes the bus keeps for listeners that
            start from a version (``from_version``); 0 keeps none.

    Bad settings raise :class:`InvalidArgument`. The engine is a context manager; on
    exit it is freed (closed first). :meth:`close` stops its threads (later calls raise
    :class:`Closed`); :meth:`free` releases it (also done on garbage collection), with
    every listener and session it still holds. All methods may be called from many
    threads at once.

    The engine keeps every :class:`Listener` and :class:`Session` it made until they
    are closed (or the engine is freed): dropping the Python object does not stop a
    listener, and its callback stays alive as long as the C listener may call it.
    """

    _handle = None  # class default, so __del__ works on a half-built instance

    def __init__(
        self,
        manual_clock=None,
        workers=None,
        queue_capacity=None,
        max_bucket_bytes=None,
        max_key_bytes=None,
        max_document_bytes=None,
        store_capacity_bytes=None,
        change_log_capacity=None,
    ):
        self._cond = threading.Condition(threading.Lock())
        self._inflight = 0
        self._closed = False
        self._manual = manual_clock is not None
        # Listeners and sessions by id (guarded by _cond's lock), and callback states
        # whose listener was freed from inside its own callback (kept until the engine
        # is freed: that callback may still be running).
        self._listeners = {}
        self._sessions = {}
        self._parked = []
        settings = [
            (_lib.tarn_engine_builder_manual_clock, manual_clock, "manual_clock", _U64_MAX, 0),
            (_lib.tarn_engine_builder_workers, workers, "workers", _U32_MAX, 0),
            (_lib.tarn_engine_builder_queue_capacity, queue_capacity, "queue_capacity", _SIZE_MAX, 0),
            (_lib.tarn_engine_builder_max_bucket_bytes, max_bucket_bytes, "max_bucket_bytes", _SIZE_MAX, 0),
            (_lib.tarn_engine_builder_max_key_bytes, max_key_bytes, "max_key_bytes", _SIZE_MAX, 0),
            (_lib.tarn_engine_builder_max_document_bytes, max_document_bytes, "max_document_bytes", _SIZE_MAX, 0),
            (_lib.tarn_engine_builder_store_capacity_bytes, store_capacity_bytes, "store_capacity_bytes", _SIZE_MAX, 0),
            (_lib.tarn_engine_builder_change_log_capacity, change_log_capacity, "change_log_capacity", _SIZE_MAX, 0),
        ]
        # Convert every argument before creating anything in C.
        calls = [(f, _uint(v, what, hi, lo)) for f, v, what, hi, lo in settings if v is not None]
        builder = _lib.tarn_engine_builder_new()
        if not builder:
            raise Panic("tarn_engine_builder_new returned NULL")
        try:
            for f, v in calls:
                _check(f(builder, v))
            out = _engine_p()
            _check(_lib.tarn_engine_builder_build(builder, ctypes.byref(out)))
        finally:
            _lib.tarn_engine_builder_free(builder)
        self._handle = out

    # -- calling C -------------------------------------------------------------------

    def _enter(self):
        with self._cond:
            if self._handle is None:
                raise Closed("the engine has been freed")
            self._inflight += 1
            return self._handle

    def _leave(self):
        with self._cond:
            self._inflight -= 1
            if self._inflight == 0:
                self._cond.notify_all()

    def _call(self, fn, *args):
        """Calls ``fn(engine, *args)`` and raises on a failing status."""
        handle = self._enter()
        try:
            status = fn(handle, *args)
            if status != 0:
                raise _error(status)
        finally:
            self._leave()

    # -- public ----------------------------------------------------------------------

    @property
    def store(self):
        """The JSON document store (:class:`Store`)."""
        return Store(self)

    @property
    def clock(self):
        """The engine clock (:class:`Clock`)."""
        return Clock(self)

    @property
    def bus(self):
        """The event bus (:class:`Bus`): listeners and signals."""
        return Bus(self)

    def open_session(self, client_id, lease_ms=None):
        """Opens a session (one client of the engine) and returns a :class:`Session`.

        Args:
            client_id: 1..=256 bytes of UTF-8 without control characters (str or bytes).
            lease_ms: with a lease (>= 1), the session is closed when not kept alive
                (:meth:`Session.keepalive`) within that many ms of the engine clock;
                None: no lease.

        Publishes a ``session_open`` event on the bucket ``"$sessions"``.
        """
        cid = _name(client_id, "client_id")
        lease = 0 if lease_ms is None else _uint(lease_ms, "lease_ms", _U64_MAX, minimum=1)
        out = _u64(0)
        self._call(_lib.tarn_session_open, cid, lease, ctypes.byref(out))
        session = Session(self, out.value, cid.decode("utf-8", "surrogateescape"), lease_ms)
        with self._cond:
            if self._handle is not None:
                self._sessions[session.id] = session
        return session

    def listeners(self):
        """The listeners made through this object and not closed yet (a list)."""
        with self._cond:
            return list(self._listeners.values())

    def sessions(self):
        """The sessions opened through this object and not closed yet (a list; a
        session closed by its lease stays here until :meth:`Session.close`)."""
        with self._cond:
            return list(self._sessions.values())

    def _register_listener(self, listener):
        with self._cond:
            if self._handle is None:
                return False
            self._listeners[listener.id] = listener
            return True

    def _forget_listener(self, listener):
        with self._cond:
            self._listeners.pop(listener.id, None)
            state = listener._state
            if state is not None and (
                self._handle is None or state.running == threading.get_ident()
            ):
                # Freed from inside its own callback, which is still running, or not
                # freed in C at all because the engine is being freed (its callbacks may
                # run until tarn_engine_free returns): keep the ctypes callback alive
                # until the engine is freed.
                self._parked.append(state)

    def _forget_session(self, session):
        with self._cond:
            self._sessions.pop(session.id, None)

    @property
    def closed(self):
        """Whether :meth:`close` or :meth:`free` has been called on this object."""
        return self._closed or self._handle is None

    def settle(self, timeout_ms=0):
        """Waits until background work has settled (no queued or running job, no timer
        due by the engine clock): after advancing a manual clock, every TTL it passed has
        been processed. ``timeout_ms`` 0 (or None) waits without limit; otherwise
        :class:`Timeout` after that long."""
        t = 0 if timeout_ms is None else _uint(timeout_ms, "timeout_ms", _U64_MAX)
        self._call(_lib.tarn_engine_settle, t)

    def close(self):
        """Stops the engine's threads; every later operation raises :class:`Closed`.
        Harmless twice. The handle stays allocated until :meth:`free`."""
        self._call(_lib.tarn_engine_close)
        self._closed = True

    def free(self):
        """Closes (if needed) and releases the engine; harmless twice. Waits for calls
        still running on other threads; later calls raise :class:`Closed`."""
        cond = self.__dict__.get("_cond")
        if cond is None:  # __init__ failed before the engine existed
            return
        with cond:
            handle = self._handle
            if handle is None:
                return
            self._handle = None  # from here on, new calls raise Closed
            self._closed = True
            busy = self._inflight > 0
            listeners = list(self._listeners)
        if busy:
            # Calls on other threads are still running: closing is allowed concurrently
            # and makes them finish (with TARN_CLOSED) instead of running on. Freeing
            # the listeners wakes threads waiting in Listener.next() and publishers
            # blocked on a full listener.
            _lib.tarn_engine_close(handle)
            for lid in listeners:
                _lib.tarn_listener_free(handle, lid)
            with cond:
                while self._inflight > 0:
                    cond.wait()
        # The C engine releases its listeners and sessions itself; after this no
        # callback runs, so the ctypes callbacks may go.
        _lib.tarn_engine_free(handle)
        with cond:
            listeners = list(self._listeners.values())
            sessions = list(self._sessions.values())
            parked = self._parked
            self._listeners = {}
            self._sessions = {}
            self._parked = []
        for l in listeners:
            l._closed = True
        for se in sessions:
            se._closed = True
        if getattr(_tls, "callback_depth", 0):
            # Freed from inside a callback (of this or another engine): that callback is
            # still running on this thread, so its ctypes callback must outlive it.
            _PARKED.extend(l._state for l in listeners if l._state is not None)
            _PARKED.extend(parked)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()
        return False

    def __del__(self):
        try:
            self.free()
        except Exception:  # interpreter shutdown: nothing sensible left to do
            pass

    def __repr__(self):
        state = "freed" if self._handle is None else ("closed" if self._closed else "open")
        clock = "manual" if self._manual else "system"
        return f"<tarn.Engine {state}, {clock} clock>"


class Store:
    """The JSON document store of an :class:`Engine` (``eng.store``).

    Names (bucket, key) are ``str`` (encoded UTF-8) or ``bytes`` (passed as is); a name
    containing NUL raises :class:`InvalidArgument` before any C call. Every change gets
    a new version from one store-wide sequence.
    """

    __slots__ = ("_engine",)

    def __init__(self, engine):
        self._engine = engine

    def write(
        self,
        bucket,
        key,
        value,
        *,
        fail_if_exists=False,
        ttl_ms=None,
        if_version=None,
        session=None,
        request_id=None,
        user_data=None,
        expire_session=False,
    ):
        """Writes ``value`` (any JSON-serializable object, serialized compactly) and
        returns the new version.

        Args:
            fail_if_exists: raise :class:`Exists` if the key holds a live document.
            ttl_ms: expire this many ms (>= 1) after the write (engine clock); None: never.
                A write without a TTL makes the document permanent again.
            if_version: write only if the current version is this (0: only if absent),
                else :class:`VersionConflict`.
            session: the :class:`Session` (or its id) making the change; listeners see
                it in ``Event.session`` (and ``ignore_own`` listeners of that session
                skip it).
            request_id: a str passed through to listeners (``Event.request_id``).
            user_data: any JSON-serializable object passed through to listeners
                (``Event.user_data``); None: none.
            expire_session: remove the document when ``session`` (required) closes. The
                key belongs to the session that last wrote it with ``expire_session``;
                a write without it makes the document permanent again.
        """
        return self._write(
            bucket,
            key,
            _dumps(value),
            fail_if_exists,
            ttl_ms,
            if_version,
            session,
            request_id,
            user_data,
            expire_session,
        )

    def write_json(
        self,
        bucket,
        key,
        json_text,
        *,
        fail_if_exists=False,
        ttl_ms=None,
        if_version=None,
        session=None,
        request_id=None,
        user_data=None,
        expire_session=False,
    ):
        """Like :meth:`write`, but ``json_text`` (bytes or str) is passed to the library
        as is: it is validated and stored byte for byte (:class:`InvalidJson` if it is
        not one JSON value)."""
        return self._write(
            bucket,
            key,
            _json_text(json_text, "json_text"),
            fail_if_exists,
            ttl_ms,
            if_version,
            session,
            request_id,
            user_data,
            expire_session,
        )

    def _write(
        self,
        bucket,
        key,
        data,
        fail_if_exists,
        ttl_ms,
        if_version,
        session,
        request_id,
        user_data,
        expire_session,
    ):
        b = _name(bucket, "bucket")
        k = _name(key, "key")
        opts = tarn_write_options()
        _fill_meta(opts.meta, self._engine, session, request_id, user_data)
        if fail_if_exists:
            opts.flags |= TARN_WRITE_FAIL_IF_EXISTS
        if expire_session:
            opts.flags |= TARN_WRITE_EXPIRE_SESSION
        if ttl_ms is not None:
            # The C struct reads 0 as "no TTL"; like the Rust API, refuse a zero TTL.
            opts.ttl_ms = _uint(ttl_ms, "ttl_ms", _U64_MAX, minimum=1)
        if if_version is not None:
            opts.flags |= TARN_WRITE_IF_VERSION
            opts.if_version = _uint(if_version, "if_version", _U64_MAX)
        out = _u64(0)
        self._engine._call(
            _lib.tarn_store_write, b, k, data, len(data), ctypes.byref(opts), ctypes.byref(out)
        )
        return out.value

    def read(self, bucket, key):
        """Reads one document as a :class:`Document`; :class:`NotFound` if the key is
        absent or expired."""
        b = _name(bucket, "bucket")
        k = _name(key, "key")
        buf = tarn_buf()
        info = tarn_doc_info()
        try:
            self._engine._call(
                _lib.tarn_store_read, b, k, ctypes.byref(buf), ctypes.byref(info)
            )
            data = _copy(buf)
        finally:
            _free(buf)
        return Document(data, info.version, info.modified_ms, info.expires_ms or None)

    def get(self, bucket, key, default=None):
        """The parsed value of a document, or ``default`` if it is absent or expired."""
        try:
            return self.read(bucket, key).value
        except NotFound:
            return default

    def read_all(self, bucket):
        """Every live document of a bucket, sorted by key, as a list of dicts with the
        keys ``key``, ``version``, ``modified_ms``, ``expires_ms`` (None: never) and
        ``value``. A bucket nobody wrote gives ``[]``."""
        b = _name(bucket, "bucket")
        buf = tarn_buf()
        try:
            self._engine._call(_lib.tarn_store_read_all, b, ctypes.byref(buf))
            data = _copy(buf)
        finally:
            _free(buf)
        return json.loads(data)

    def list(self, bucket, keys_only=True):
        """A bucket's keys sorted: a list of str with ``keys_only``, otherwise a list of
        dicts ``{"key": ..., "value": ...}``."""
        b = _name(bucket, "bucket")
        flags = TARN_LIST_KEYS_ONLY if keys_only else 0
        buf = tarn_buf()
        try:
            self._engine._call(_lib.tarn_store_list, b, flags, ctypes.byref(buf))
            data = _copy(buf)
        finally:
            _free(buf)
        return json.loads(data)

    def buckets(self):
        """The sorted names of the buckets holding live documents (list of str)."""
        buf = tarn_buf()
        try:
            self._engine._call(_lib.tarn_store_buckets, ctypes.byref(buf))
            data = _copy(buf)
        finally:
            _free(buf)
        return json.loads(data)

    def patch(
        self,
        bucket,
        key,
        ops,
        *,
        if_version=None,
        remove_data_from_reply=False,
        session=None,
        request_id=None,
        user_data=None,
    ):
        """Applies an RFC 6902 patch, all operations or none, and returns a
        :class:`Patched`. ``ops`` is a list of operations (serialized with json.dumps)
        or raw JSON text (bytes or str, passed as is). A patch keeps the document's TTL.

        Args:
            if_version: patch only if the current version is this, else
                :class:`VersionConflict`.
            remove_data_from_reply: do not return the patched document
                (``Patched.json`` and ``.value`` are None).
            session, request_id, user_data: passed through to listeners, as for
                :meth:`write`. A patch keeps the document's owning session.

        A failing patch (:class:`NotFound`, :class:`InvalidPatch`,
        :class:`PatchPathNotFound`, :class:`PatchTestFailed`,
        :class:`VersionConflict`, :class:`TooLarge`) leaves the document untouched.
        """
        b = _name(bucket, "bucket")
        k = _name(key, "key")
        if isinstance(ops, (bytes, bytearray, memoryview, str)):
            data = _json_text(ops, "ops")
        else:
            data = _dumps(ops)
        opts = tarn_patch_options()
        _fill_meta(opts.meta, self._engine, session, request_id, user_data)
        if remove_data_from_reply:
            opts.flags |= TARN_PATCH_REMOVE_DATA_FROM_REPLY
        if if_version is not None:
            opts.flags |= TARN_PATCH_IF_VERSION
            opts.if_version = _uint(if_version, "if_version", _U64_MAX)
        out = _u64(0)
        buf = tarn_buf()
        try:
            self._engine._call(
                _lib.tarn_store_patch,
                b,
                k,
                data,
                len(data),
                ctypes.byref(opts),
                ctypes.byref(out),
                ctypes.byref(buf),
            )
            # With TARN_PATCH_REMOVE_DATA_FROM_REPLY the library sets the buffer empty;
            # a document is never empty, so an empty buffer means "not returned".
            doc = _copy(buf) if buf.data else None
        finally:
            _free(buf)
        return Patched(out.value, doc)

    def remove(self, bucket, key, *, if_version=None, session=None, request_id=None, user_data=None):
        """Removes a document and returns the removal's version; :class:`NotFound` if
        absent, :class:`VersionConflict` if ``if_version`` does not match.
        ``session``, ``request_id`` and ``user_data`` are passed through to listeners, as
        for :meth:`write`."""
        b = _name(bucket, "bucket")
        k = _name(key, "key")
        opts = tarn_remove_options()
        _fill_meta(opts.meta, self._engine, session, request_id, user_data)
        if if_version is not None:
            opts.flags |= TARN_REMOVE_IF_VERSION
            opts.if_version = _uint(if_version, "if_version", _U64_MAX)
        out = _u64(0)
        self._engine._call(
            _lib.tarn_store_remove, b, k, ctypes.byref(opts), ctypes.byref(out)
        )
        return out.value

    def last_version(self):
        """The newest version the store has assigned."""
        out = _u64(0)
        self._engine._call(_lib.tarn_store_last_version, ctypes.byref(out))
        return out.value


class Clock:
    """The engine clock (``eng.clock``): ms since the Unix epoch. Only a manual clock
    (``Engine(manual_clock=...)``) can be set or advanced; on the system clock those
    raise :class:`NotSupported`."""

    __slots__ = ("_engine",)

    def __init__(self, engine):
        self._engine = engine

    def now(self):
        """The current engine time in ms."""
        out = _u64(0)
        self._engine._call(_lib.tarn_clock_now, ctypes.byref(out))
        return out.value

    def set(self, ms):
        """Sets a manual clock to ``ms`` and returns it; timers it passes fire (see
        :meth:`Engine.settle`). :class:`InvalidArgument` if ``ms`` is earlier than now."""
        ms = _uint(ms, "ms", _U64_MAX)
        self._engine._call(_lib.tarn_clock_set, ms)
        return ms

    def advance(self, ms):
        """Advances a manual clock by ``ms`` and returns the new time."""
        ms = _uint(ms, "ms", _U64_MAX)
        out = _u64(0)
        self._engine._call(_lib.tarn_clock_advance, ms, ctypes.byref(out))
        return out.value


# ---------------------------------------------------------------------------------------
# Change metadata, sessions, the event bus.
# ---------------------------------------------------------------------------------------

#: Per-thread state: how deep this thread is inside tarn callbacks.
_tls = threading.local()
#: Callback states that must never be released: their listener (or engine) was freed
#: from inside one of their calls. Rare; a few bytes each.
_PARKED = []


def _session_id(session, engine):
    """The C session id of ``session``: None (0: no session), a :class:`Session` of this
    engine, or an int id."""
    if session is None:
        return 0
    if isinstance(session, Session):
        if session._engine is not engine:
            raise InvalidArgument("the session belongs to another engine")
        return session.id
    return _uint(session, "session", _U64_MAX)


def _fill_meta(meta, engine, session, request_id, user_data):
    """Fills a ``tarn_change_meta`` (ctypes keeps the assigned bytes alive with the
    options struct it belongs to)."""
    meta.session = _session_id(session, engine)
    if request_id is not None:
        meta.request_id = _name(request_id, "request_id")
    if user_data is not None:
        data = _dumps(user_data)
        meta.user_data = data
        meta.user_data_len = len(data)


def _listen_options(send_values, ignore_own, capacity, block, block_timeout_ms, from_version):
    opts = tarn_listen_options()
    if send_values:
        opts.flags |= TARN_LISTEN_SEND_VALUES
    if ignore_own:
        opts.flags |= TARN_LISTEN_IGNORE_OWN
    if block:
        opts.flags |= TARN_LISTEN_BLOCK
    if capacity is not None:
        # The C struct reads 0 as "the default"; like the Rust API, refuse a zero bound.
        opts.capacity = _uint(capacity, "capacity", _SIZE_MAX, minimum=1)
    if block_timeout_ms is not None:
        opts.block_timeout_ms = _uint(block_timeout_ms, "block_timeout_ms", _U64_MAX, minimum=1)
    if from_version is not None:
        opts.flags |= TARN_LISTEN_FROM_VERSION
        opts.from_version = _uint(from_version, "from_version", _U64_MAX)
    return opts


class Event:
    """One event as a listener receives it (parsed from the library's JSON object).

    Attributes:
        kind: ``"write"``, ``"patch"``, ``"remove"``, ``"expire"``, ``"session_expire"``,
            ``"signal"``, ``"session_open"`` or ``"session_close"``.
        bucket, key: where it happened (for presence events: ``"$sessions"`` and the
            session id as a str).
        version: the change's store version (0 for signals and session events).
        timestamp_ms: when it happened, engine-clock ms since the Unix epoch.
        session: the id of the session that made the change or sent the signal, or None.
        request_id: the writer's request id (str) or None.
        user_data: the writer's user data (parsed JSON) or None.
        value: the document after the change, the signal's value, or for presence
            events ``{"session": id, "client_id": ...}`` (parsed JSON) — only for
            listeners with ``send_values``; None otherwise, and for removals.
        ops: for a patch, the operations applied (parsed JSON list); else None.
        missed: how many events this listener dropped at its bound just before this one.
        json: the raw JSON object (bytes), exactly as the library sent it.
    """

    __slots__ = (
        "json",
        "kind",
        "bucket",
        "key",
        "version",
        "timestamp_ms",
        "session",
        "request_id",
        "user_data",
        "value",
        "ops",
        "missed",
    )

    def __init__(self, json_bytes):
        self.json = bytes(json_bytes)
        d = json.loads(self.json)
        self.kind = d["kind"]
        self.bucket = d["bucket"]
        self.key = d["key"]
        self.version = d["version"]
        self.timestamp_ms = d["timestamp_ms"]
        self.session = d.get("session")
        self.request_id = d.get("request_id")
        self.user_data = d.get("user_data")
        self.value = d.get("value")
        self.ops = d.get("ops")
        self.missed = d.get("missed", 0)

    @property
    def is_change(self):
        """Whether this event is a change to the store (it then has a version)."""
        return self.kind in ("write", "patch", "remove", "expire", "session_expire")

    def __repr__(self):
        return (
            f"tarn.Event(kind={self.kind!r}, bucket={self.bucket!r}, key={self.key!r}, "
            f"version={self.version}, session={self.session}, missed={self.missed})"
        )


ListenerStats = collections.namedtuple("ListenerStats", ["delivered", "missed", "panics"])
ListenerStats.__doc__ = """A listener's counters (``tarn_listener_get_stats``): events handed to the
consumer, events dropped at the bound (the lag counter), panics caught in the callback."""


class _CallbackState:
    """What a callback listener's ctypes callback needs; the C listener may call it
    until it is freed, so it lives (through the engine's table) at least that long."""

    __slots__ = ("callback", "errors", "last_error", "running", "lock", "c_func")

    def __init__(self, callback):
        self.callback = callback
        self.errors = 0
        self.last_error = None
        self.running = None  # the thread id while a call runs
        self.lock = threading.Lock()
        self.c_func = tarn_event_fn(self._call)

    def _call(self, data, length, _user_data):
        # Runs on an engine worker thread (ctypes takes the GIL). Nothing may escape
        # into C: every exception is caught and counted.
        self.running = threading.get_ident()
        _tls.callback_depth = getattr(_tls, "callback_depth", 0) + 1
        try:
            event = Event(ctypes.string_at(data, length))
            self.callback(event)
        except BaseException as e:  # noqa: BLE001 - contained by design
            try:
                with self.lock:
                    self.errors += 1
                    self.last_error = e
            except BaseException:  # pragma: no cover - nothing else can be done
                pass
        finally:
            _tls.callback_depth -= 1
            self.running = None


class Listener:
    """A listener (``tarn_bus_listen`` or ``tarn_bus_subscribe``), held by id.

    A pull listener (from :meth:`Bus.subscribe`) is read with :meth:`next` or waited on
    with :meth:`fd`; a callback listener (from :meth:`Bus.listen`) calls its callback
    with each :class:`Event` on an engine worker thread, one event at a time. An
    exception raised by the callback is caught and counted in :attr:`callback_errors`
    (the latest in :attr:`last_callback_error`); the listener keeps working.

    The listener lives until :meth:`close` (harmless twice; also on leaving a ``with``
    block) or until its engine is freed. Calls on a closed listener raise
    :class:`NotFound` (the C id is released); after the engine is freed, :class:`Closed`.
    A listener of a session that closed raises :class:`Closed` from :meth:`next`.
    """

    def __init__(self, engine, listener_id, bucket, key, session_id, state):
        self._engine = engine
        self.id = listener_id
        self.bucket = bucket
        self.key = key
        self.session = session_id or None
        self._state = state
        self._closed = False
        self._lock = threading.Lock()

    @property
    def is_callback(self):
        """Whether this listener delivers by callback (else it is pulled)."""
        return self._state is not None

    @property
    def closed(self):
        """Whether :meth:`close` was called (or the engine freed)."""
        return self._closed

    @property
    def callback_errors(self):
        """How many times the callback raised (always 0 for a pull listener)."""
        return 0 if self._state is None else self._state.errors

    @property
    def last_callback_error(self):
        """The latest exception the callback raised, or None."""
        return None if self._state is None else self._state.last_error

    def next(self, timeout_ms=0):
        """Takes the next event (an :class:`Event`), waiting up to ``timeout_ms`` for one
        (0 or None: no wait); None when none came. :class:`NotSupported` for a callback
        listener; :class:`Closed` once its session closed."""
        t = 0 if timeout_ms is None else _uint(timeout_ms, "timeout_ms", _U64_MAX)
        buf = tarn_buf()
        try:
            try:
                self._engine._call(_lib.tarn_listener_next, self.id, t, ctypes.byref(buf))
            except Timeout:
                return None
            data = _copy(buf)
        finally:
            _free(buf)
        return Event(data)

    def drain(self):
        """Every event waiting now (a list; empty if none), without waiting."""
        out = []
        while True:
            e = self.next(0)
            if e is None:
                return out
            out.append(e)

    def fd(self):
        """A file descriptor that is readable exactly while events wait (for
        ``select``/``poll``/``selectors``/asyncio ``add_reader``). It belongs to the
        listener: do not read, write or close it; valid until :meth:`close`.
        :class:`NotSupported` for a callback listener."""
        out = ctypes.c_int32(-1)
        self._engine._call(_lib.tarn_listener_fd, self.id, ctypes.byref(out))
        return out.value

    def stats(self):
        """The listener's counters as a :class:`ListenerStats`
        ``(delivered, missed, panics)``."""
        st = tarn_listener_stats()
        self._engine._call(_lib.tarn_listener_get_stats, self.id, ctypes.byref(st))
        return ListenerStats(st.delivered, st.missed, st.panics)

    def close(self):
        """Stops the listener and releases its id (``tarn_listener_free``); waits for a
        running callback to return (unless called from that callback). Harmless twice,
        and after the engine was freed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._engine._call(_lib.tarn_listener_free, self.id)
        except (NotFound, Closed):
            pass  # already released (by the engine, or through the raw id)
        finally:
            self._engine._forget_listener(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        how = "callback" if self.is_callback else "pull"
        state = "closed" if self._closed else "open"
        return f"<tarn.Listener {self.id} {how} {self.bucket!r}/{self.key!r} {state}>"


class Bus:
    """The event bus of an :class:`Engine` (``eng.bus``).

    Listeners name a bucket and a key, either of which may be ``"*"``; the bucket
    ``"$sessions"`` carries presence events. Options of :meth:`listen` and
    :meth:`subscribe`:

        send_values: deliver document (and signal) values in ``Event.value``.
        ignore_own: skip changes made by the listener's own ``session``.
        capacity: the queue bound (>= 1; None: 1024).
        block: at the bound, make the publisher wait for room (at most
            ``block_timeout_ms``, then drop and count; never on an engine thread)
            instead of dropping the new event and counting it.
        block_timeout_ms: with ``block``, the longest a publisher waits (>= 1; None:
            1000).
        from_version: first deliver every retained change after this store version
            (:class:`TooOld` if the change log no longer has them), then live ones.
        session: a :class:`Session` (or id) owning the listener; it closes with it.
    """

    __slots__ = ("_engine",)

    def __init__(self, engine):
        self._engine = engine

    def _register(self, bucket, key, callback, session, opts):
        eng = self._engine
        b = _name(bucket, "bucket")
        k = _name(key, "key")
        sid = _session_id(session, eng)
        out = _u64(0)
        if callback is None:
            state = None
            eng._call(_lib.tarn_bus_subscribe, sid, b, k, ctypes.byref(opts), ctypes.byref(out))
        else:
            # Made before the C call and held by the listener (in the engine's table):
            # the C listener may call it as soon as it exists.
            state = _CallbackState(callback)
            eng._call(
                _lib.tarn_bus_listen,
                sid,
                b,
                k,
                ctypes.byref(opts),
                state.c_func,
                None,
                ctypes.byref(out),
            )
        listener = Listener(
            eng,
            out.value,
            b.decode("utf-8", "surrogateescape"),
            k.decode("utf-8", "surrogateescape"),
            sid,
            state,
        )
        if not eng._register_listener(listener):  # pragma: no cover - freed meanwhile
            listener._closed = True
            if state is not None:
                _PARKED.append(state)
        return listener

    def listen(
        self,
        bucket,
        key,
        callback,
        *,
        send_values=False,
        ignore_own=False,
        capacity=None,
        block=False,
        block_timeout_ms=None,
        from_version=None,
        session=None,
    ):
        """Listens on ``bucket``/``key`` and calls ``callback(event)`` with each
        :class:`Event`, on an engine worker thread, one event at a time per listener. The
        callback may call the engine (but not :meth:`Engine.settle`) and should not block
        for long. Returns the :class:`Listener`. Options: see :class:`Bus`."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        opts = _listen_options(send_values, ignore_own, capacity, block, block_timeout_ms, from_version)
        return self._register(bucket, key, callback, session, opts)

    def subscribe(
        self,
        bucket,
        key,
        *,
        send_values=False,
        ignore_own=False,
        capacity=None,
        block=False,
        block_timeout_ms=None,
        from_version=None,
        session=None,
    ):
        """Listens on ``bucket``/``key`` for pulling (:meth:`Listener.next`,
        :meth:`Listener.fd`). Returns the :class:`Listener`. Options: see :class:`Bus`."""
        opts = _listen_options(send_values, ignore_own, capacity, block, block_timeout_ms, from_version)
        return self._register(bucket, key, None, session, opts)

    def signal(self, bucket, key, value=None, session=None):
        """Sends a signal event to every matching listener; it is never stored.
        ``value`` is any JSON-serializable object, or None for no value (use
        :meth:`signal_json` to send JSON ``null`` or raw text)."""
        data = None if value is None else _dumps(value)
        self._signal(bucket, key, data, session)

    def signal_json(self, bucket, key, json_text, session=None):
        """Like :meth:`signal`, with the value as raw JSON text (bytes or str), validated
        by the library (:class:`InvalidJson`)."""
        self._signal(bucket, key, _json_text(json_text, "json_text"), session)

    def _signal(self, bucket, key, data, session):
        b = _name(bucket, "bucket")
        k = _name(key, "key")
        sid = _session_id(session, self._engine)
        n = 0 if data is None else len(data)
        self._engine._call(_lib.tarn_bus_signal, sid, b, k, data, n)


class Session:
    """A session (one client of the engine), made by :meth:`Engine.open_session` and
    held by id.

    Attributes: ``id`` (int, never 0), ``client_id`` (str), ``lease_ms`` (None: no
    lease).

    Closing it (:meth:`close`, leaving a ``with`` block, or its lease running out)
    stops its listeners, removes the keys it owns (written with ``expire_session``;
    each removal is a ``session_expire`` event) and publishes ``session_close`` on
    ``"$sessions"``. After :meth:`close` the id is released: passing it to any call
    raises :class:`NotFound`.
    """

    def __init__(self, engine, session_id, client_id, lease_ms):
        self._engine = engine
        self.id = session_id
        self.client_id = client_id
        self.lease_ms = lease_ms
        self._closed = False
        self._lock = threading.Lock()

    @property
    def closed(self):
        """Whether :meth:`close` was called (or the engine freed). A session closed by
        its lease is not ``closed`` here until :meth:`close`; see :meth:`is_open`."""
        return self._closed

    def keepalive(self):
        """Keeps a leased session alive for another lease from now. :class:`Closed` if
        its lease already ran out; :class:`NotFound` after :meth:`close`."""
        self._engine._call(_lib.tarn_session_keepalive, self.id)

    def is_open(self):
        """Whether the session is still open: False once closed by its lease or by
        :meth:`close`."""
        if self._closed:
            return False
        out = ctypes.c_bool(False)
        try:
            self._engine._call(_lib.tarn_session_is_open, self.id, ctypes.byref(out))
        except NotFound:
            return False  # closed through its raw id
        return bool(out.value)

    def close(self):
        """Closes the session (see the class docs). Harmless twice, after its lease ran
        out, and after the engine was freed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._engine._call(_lib.tarn_session_close, self.id)
        except (NotFound, Closed):
            pass  # already released (through the raw id), or the engine is gone
        finally:
            self._engine._forget_session(self)

    def listen(self, bucket, key, callback, **options):
        """:meth:`Bus.listen` as this session (the listener closes with it)."""
        return self._engine.bus.listen(bucket, key, callback, session=self, **options)

    def subscribe(self, bucket, key, **options):
        """:meth:`Bus.subscribe` as this session (the listener closes with it)."""
        return self._engine.bus.subscribe(bucket, key, session=self, **options)

    def signal(self, bucket, key, value=None):
        """:meth:`Bus.signal` as this session."""
        self._engine.bus.signal(bucket, key, value, session=self)

    def signal_json(self, bucket, key, json_text):
        """:meth:`Bus.signal_json` as this session."""
        self._engine.bus.signal_json(bucket, key, json_text, session=self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        state = "closed" if self._closed else "open"
        return f"<tarn.Session {self.id} client_id={self.client_id!r} {state}>"
