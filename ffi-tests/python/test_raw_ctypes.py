"""The C ABI through raw ctypes, WITHOUT python/tarn.py.

Loads the library named by TARN_LIB and declares the signatures it uses itself, so the
checks do not depend on the wrapper. Run from the repository root:

    TARN_LIB=target/debug/libtarn.so python3 ffi-tests/python/test_raw_ctypes.py

Standard library only (unittest). Exits non-zero when a check fails or no test ran.
"""

import ctypes
import json
import os
import queue
import re
import sys
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# Constants from include/tarn.h.
TARN_ABI_VERSION = 2
TARN_OK = 0
TARN_NOT_FOUND = 1
TARN_EXISTS = 2
TARN_INVALID_ARGUMENT = 3
TARN_NULL_ARGUMENT = 4
TARN_INVALID_UTF8 = 5
TARN_INVALID_JSON = 6
TARN_VERSION_CONFLICT = 10
TARN_TOO_LARGE = 11
TARN_TIMEOUT = 13
TARN_NOT_SUPPORTED = 14
TARN_CLOSED = 15
TARN_TOO_OLD = 17
TARN_WRITE_FAIL_IF_EXISTS = 1
TARN_WRITE_IF_VERSION = 2
TARN_WRITE_EXPIRE_SESSION = 4
TARN_LISTEN_SEND_VALUES = 1
TARN_LISTEN_IGNORE_OWN = 2
TARN_LISTEN_BLOCK = 4
TARN_LISTEN_FROM_VERSION = 8
TARN_PATCH_REMOVE_DATA_FROM_REPLY = 1
TARN_REMOVE_IF_VERSION = 1
TARN_LIST_KEYS_ONLY = 1
STATUS_NAMES = [
    "TARN_OK",
    "TARN_NOT_FOUND",
    "TARN_EXISTS",
    "TARN_INVALID_ARGUMENT",
    "TARN_NULL_ARGUMENT",
    "TARN_INVALID_UTF8",
    "TARN_INVALID_JSON",
    "TARN_INVALID_PATCH",
    "TARN_PATCH_PATH_NOT_FOUND",
    "TARN_PATCH_TEST_FAILED",
    "TARN_VERSION_CONFLICT",
    "TARN_TOO_LARGE",
    "TARN_FULL",
    "TARN_TIMEOUT",
    "TARN_NOT_SUPPORTED",
    "TARN_CLOSED",
    "TARN_PANIC",
    "TARN_TOO_OLD",
]

SENTINEL = 0xDEADBEEFCAFEF00D


class Buf(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("len", ctypes.c_size_t),
        ("_owner", ctypes.c_void_p),
    ]


class DocInfo(ctypes.Structure):
    _fields_ = [
        ("version", ctypes.c_uint64),
        ("modified_ms", ctypes.c_uint64),
        ("expires_ms", ctypes.c_uint64),
    ]


class ChangeMeta(ctypes.Structure):
    _fields_ = [
        ("session", ctypes.c_uint64),
        ("request_id", ctypes.c_char_p),
        ("user_data", ctypes.c_void_p),
        ("user_data_len", ctypes.c_size_t),
    ]


class WriteOptions(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint32),
        ("ttl_ms", ctypes.c_uint64),
        ("if_version", ctypes.c_uint64),
        ("meta", ChangeMeta),
    ]


class PatchOptions(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint32), ("if_version", ctypes.c_uint64), ("meta", ChangeMeta)]


class RemoveOptions(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint32), ("if_version", ctypes.c_uint64), ("meta", ChangeMeta)]


class ListenOptions(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint32),
        ("capacity", ctypes.c_size_t),
        ("block_timeout_ms", ctypes.c_uint64),
        ("from_version", ctypes.c_uint64),
    ]


class ListenerStats(ctypes.Structure):
    _fields_ = [
        ("delivered", ctypes.c_uint64),
        ("missed", ctypes.c_uint64),
        ("panics", ctypes.c_uint64),
    ]


# void (*tarn_event_fn)(const uint8_t *event, size_t len, void *user_data)
EventFn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)


def load():
    path = os.environ.get("TARN_LIB")
    if not path:
        sys.exit("error: set TARN_LIB to the path of libtarn.so")
    lib = ctypes.CDLL(path)
    vp = ctypes.c_void_p  # opaque handles
    st = ctypes.c_int  # enum tarn_status
    u64p = ctypes.POINTER(ctypes.c_uint64)
    bufp = ctypes.POINTER(Buf)
    s = ctypes.c_char_p
    sigs = {
        "tarn_version": (ctypes.c_char_p, []),
        "tarn_abi_version": (ctypes.c_uint32, []),
        "tarn_status_name": (ctypes.c_char_p, [ctypes.c_int32]),
        "tarn_last_error": (ctypes.c_char_p, []),
        "tarn_buf_free": (None, [bufp]),
        "tarn_engine_new": (st, [ctypes.POINTER(vp)]),
        "tarn_engine_builder_new": (vp, []),
        "tarn_engine_builder_free": (None, [vp]),
        "tarn_engine_builder_workers": (st, [vp, ctypes.c_uint32]),
        "tarn_engine_builder_manual_clock": (st, [vp, ctypes.c_uint64]),
        "tarn_engine_builder_build": (st, [vp, ctypes.POINTER(vp)]),
        "tarn_engine_close": (st, [vp]),
        "tarn_engine_free": (None, [vp]),
        "tarn_engine_settle": (st, [vp, ctypes.c_uint64]),
        "tarn_clock_now": (st, [vp, u64p]),
        "tarn_clock_set": (st, [vp, ctypes.c_uint64]),
        "tarn_clock_advance": (st, [vp, ctypes.c_uint64, u64p]),
        "tarn_store_read": (st, [vp, s, s, bufp, ctypes.POINTER(DocInfo)]),
        "tarn_store_read_all": (st, [vp, s, bufp]),
        "tarn_store_list": (st, [vp, s, ctypes.c_uint32, bufp]),
        "tarn_store_buckets": (st, [vp, bufp]),
        "tarn_store_write": (
            st,
            [vp, s, s, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(WriteOptions), u64p],
        ),
        "tarn_store_patch": (
            st,
            [vp, s, s, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(PatchOptions), u64p, bufp],
        ),
        "tarn_store_remove": (st, [vp, s, s, ctypes.POINTER(RemoveOptions), u64p]),
        "tarn_store_last_version": (st, [vp, u64p]),
        "tarn_engine_builder_change_log_capacity": (st, [vp, ctypes.c_size_t]),
        "tarn_session_open": (st, [vp, s, ctypes.c_uint64, u64p]),
        "tarn_session_keepalive": (st, [vp, ctypes.c_uint64]),
        "tarn_session_is_open": (st, [vp, ctypes.c_uint64, ctypes.POINTER(ctypes.c_bool)]),
        "tarn_session_close": (st, [vp, ctypes.c_uint64]),
        "tarn_bus_listen": (
            st,
            [vp, ctypes.c_uint64, s, s, ctypes.POINTER(ListenOptions), EventFn, ctypes.c_void_p, u64p],
        ),
        "tarn_bus_subscribe": (st, [vp, ctypes.c_uint64, s, s, ctypes.POINTER(ListenOptions), u64p]),
        "tarn_listener_next": (st, [vp, ctypes.c_uint64, ctypes.c_uint64, bufp]),
        "tarn_listener_fd": (st, [vp, ctypes.c_uint64, ctypes.POINTER(ctypes.c_int32)]),
        "tarn_listener_get_stats": (st, [vp, ctypes.c_uint64, ctypes.POINTER(ListenerStats)]),
        "tarn_listener_free": (st, [vp, ctypes.c_uint64]),
        "tarn_bus_signal": (st, [vp, ctypes.c_uint64, s, s, ctypes.c_char_p, ctypes.c_size_t]),
    }
    for name, (res, args) in sigs.items():
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = args
    return lib


lib = load()


def last_error():
    return lib.tarn_last_error().decode("utf-8")


def buf_bytes(buf):
    return ctypes.string_at(buf.data, buf.len) if buf.data else b""


def sentinel_buf():
    """A buffer filled with garbage the library must not overwrite on failure (and
    that must never be passed to tarn_buf_free)."""
    return Buf(SENTINEL, 12345, SENTINEL ^ 1)


def is_sentinel_buf(buf):
    return (buf.data, buf.len, buf._owner) == (SENTINEL, 12345, SENTINEL ^ 1)


class RawCase(unittest.TestCase):
    def new_engine(self, manual_clock=1000, change_log_capacity=None):
        b = lib.tarn_engine_builder_new()
        self.assertTrue(b)
        try:
            if manual_clock is not None:
                self.assertEqual(lib.tarn_engine_builder_manual_clock(b, manual_clock), TARN_OK)
            if change_log_capacity is not None:
                self.assertEqual(
                    lib.tarn_engine_builder_change_log_capacity(b, change_log_capacity), TARN_OK
                )
            self.assertEqual(lib.tarn_engine_builder_workers(b, 2), TARN_OK)
            eng = ctypes.c_void_p()
            self.assertEqual(lib.tarn_engine_builder_build(b, ctypes.byref(eng)), TARN_OK)
        finally:
            lib.tarn_engine_builder_free(b)
        self.assertTrue(eng.value)
        self.addCleanup(lib.tarn_engine_free, eng)
        return eng

    def write(self, eng, bucket, key, data, opts=None):
        v = ctypes.c_uint64(0)
        st = lib.tarn_store_write(
            eng, bucket, key, data, len(data), ctypes.byref(opts) if opts else None, ctypes.byref(v)
        )
        return st, v.value

    def assertStatus(self, got, want):
        self.assertEqual(
            got,
            want,
            f"got {STATUS_NAMES[got] if 0 <= got < len(STATUS_NAMES) else got}, want {STATUS_NAMES[want]}",
        )
        if want != TARN_OK:
            self.assertTrue(last_error(), "tarn_last_error() is empty after a failure")


class TestBasics(RawCase):
    def test_abi_and_version(self):
        self.assertEqual(lib.tarn_abi_version(), TARN_ABI_VERSION)
        v = lib.tarn_version().decode("ascii")
        self.assertRegex(v, r"^\d+\.\d+\.\d+")
        with open(os.path.join(ROOT, "Cargo.toml"), encoding="utf-8") as f:
            m = re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.M)
        self.assertEqual(v, m.group(1))
        # A static string: the same address every call.
        raw = ctypes.CFUNCTYPE(ctypes.c_void_p)(("tarn_version", lib))
        self.assertTrue(raw())
        self.assertEqual(raw(), raw())
        self.assertEqual(ctypes.string_at(raw()), v.encode())

    def test_status_names(self):
        for value, name in enumerate(STATUS_NAMES):
            self.assertEqual(lib.tarn_status_name(value).decode(), name)
        for value in (-1, 18, 100, 2**31 - 1, -(2**31)):
            self.assertEqual(lib.tarn_status_name(value).decode(), "TARN_UNKNOWN_STATUS")

    def test_engine_new_default(self):
        eng = ctypes.c_void_p()
        self.assertStatus(lib.tarn_engine_new(ctypes.byref(eng)), TARN_OK)
        self.assertTrue(eng.value)
        now = ctypes.c_uint64(0)
        self.assertStatus(lib.tarn_clock_now(eng, ctypes.byref(now)), TARN_OK)
        self.assertGreater(now.value, 1_600_000_000_000)
        self.assertStatus(lib.tarn_clock_set(eng, now.value + 5), TARN_NOT_SUPPORTED)
        self.assertStatus(lib.tarn_engine_close(eng), TARN_OK)
        self.assertStatus(lib.tarn_engine_close(eng), TARN_OK)
        lib.tarn_engine_free(eng)

    def test_free_null_is_a_no_op(self):
        lib.tarn_engine_free(None)
        lib.tarn_engine_builder_free(None)
        lib.tarn_buf_free(None)


class TestBuffers(RawCase):
    def test_write_read_remove_round_trip(self):
        eng = self.new_engine()
        st, v1 = self.write(eng, b"b", b"k", b'{"a": [1, 2]}')
        self.assertStatus(st, TARN_OK)
        self.assertGreater(v1, 0)
        buf = Buf()
        info = DocInfo()
        self.assertStatus(lib.tarn_store_read(eng, b"b", b"k", ctypes.byref(buf), ctypes.byref(info)), TARN_OK)
        self.assertEqual(buf_bytes(buf), b'{"a": [1, 2]}')
        self.assertEqual(buf.len, 13)
        self.assertTrue(buf._owner)
        self.assertEqual((info.version, info.modified_ms, info.expires_ms), (v1, 1000, 0))
        lib.tarn_buf_free(ctypes.byref(buf))
        self.assertEqual((buf.data, buf.len, buf._owner), (None, 0, None), "freed buffer is zeroed")
        lib.tarn_buf_free(ctypes.byref(buf))  # second free of the zeroed buffer: no-op
        # out_info may be NULL.
        buf2 = Buf()
        self.assertStatus(lib.tarn_store_read(eng, b"b", b"k", ctypes.byref(buf2), None), TARN_OK)
        lib.tarn_buf_free(ctypes.byref(buf2))
        v2 = ctypes.c_uint64(0)
        self.assertStatus(lib.tarn_store_remove(eng, b"b", b"k", None, ctypes.byref(v2)), TARN_OK)
        self.assertGreater(v2.value, v1)
        self.assertStatus(lib.tarn_store_read(eng, b"b", b"k", ctypes.byref(Buf()), None), TARN_NOT_FOUND)
        self.assertStatus(lib.tarn_store_remove(eng, b"b", b"k", None, None), TARN_NOT_FOUND)

    def test_zeroed_buffer_free_is_a_no_op(self):
        buf = Buf()
        lib.tarn_buf_free(ctypes.byref(buf))
        lib.tarn_buf_free(ctypes.byref(buf))
        self.assertEqual((buf.data, buf.len, buf._owner), (None, 0, None))

    def test_buffer_outlives_overwrite_and_removal(self):
        eng = self.new_engine()
        self.assertStatus(self.write(eng, b"b", b"k", b'"old"')[0], TARN_OK)
        buf = Buf()
        self.assertStatus(lib.tarn_store_read(eng, b"b", b"k", ctypes.byref(buf), None), TARN_OK)
        self.assertStatus(self.write(eng, b"b", b"k", b'"new"')[0], TARN_OK)
        self.assertStatus(lib.tarn_store_remove(eng, b"b", b"k", None, None), TARN_OK)
        self.assertEqual(buf_bytes(buf), b'"old"')
        lib.tarn_buf_free(ctypes.byref(buf))

    def test_json_outputs(self):
        eng = self.new_engine()
        for k in (b"b", b"a"):
            self.assertStatus(self.write(eng, b"bk", k, b"[1]")[0], TARN_OK)
        for call, want in [
            (lambda o: lib.tarn_store_list(eng, b"bk", TARN_LIST_KEYS_ONLY, o), b'["a","b"]'),
            (lambda o: lib.tarn_store_list(eng, b"bk", 0, o), b'[{"key":"a","value":[1]},{"key":"b","value":[1]}]'),
            (lambda o: lib.tarn_store_buckets(eng, o), b'["bk"]'),
            (lambda o: lib.tarn_store_read_all(eng, b"none", o), b"[]"),
        ]:
            buf = Buf()
            self.assertStatus(call(ctypes.byref(buf)), TARN_OK)
            self.assertEqual(buf_bytes(buf), want)
            lib.tarn_buf_free(ctypes.byref(buf))
            lib.tarn_buf_free(ctypes.byref(buf))
        buf = Buf()
        self.assertStatus(lib.tarn_store_read_all(eng, b"bk", ctypes.byref(buf)), TARN_OK)
        self.assertEqual(
            buf_bytes(buf),
            b'[{"key":"a","version":2,"modified_ms":1000,"expires_ms":null,"value":[1]},'
            b'{"key":"b","version":1,"modified_ms":1000,"expires_ms":null,"value":[1]}]',
        )
        lib.tarn_buf_free(ctypes.byref(buf))

    def test_patch_buffers(self):
        eng = self.new_engine()
        self.assertStatus(self.write(eng, b"p", b"k", b'{"a":1}')[0], TARN_OK)
        ops = b'[{"op":"add","path":"/b","value":2}]'
        v = ctypes.c_uint64(0)
        buf = Buf()
        self.assertStatus(lib.tarn_store_patch(eng, b"p", b"k", ops, len(ops), None, ctypes.byref(v), ctypes.byref(buf)), TARN_OK)
        self.assertEqual(buf_bytes(buf), b'{"a":1,"b":2}')
        lib.tarn_buf_free(ctypes.byref(buf))
        # REMOVE_DATA_FROM_REPLY: out_doc is set empty (a zeroed buffer).
        ops = b'[{"op":"add","path":"/c","value":3}]'
        opts = PatchOptions(TARN_PATCH_REMOVE_DATA_FROM_REPLY, 0)  # meta: all zero
        buf = sentinel_buf()
        self.assertStatus(lib.tarn_store_patch(eng, b"p", b"k", ops, len(ops), ctypes.byref(opts), None, ctypes.byref(buf)), TARN_OK)
        self.assertEqual((buf.data, buf.len, buf._owner), (None, 0, None))
        lib.tarn_buf_free(ctypes.byref(buf))
        # Both outputs NULL.
        ops = b'[{"op":"remove","path":"/c"}]'
        self.assertStatus(lib.tarn_store_patch(eng, b"p", b"k", ops, len(ops), None, None, None), TARN_OK)


class TestNullArguments(RawCase):
    def assertNull(self, status):
        self.assertStatus(status, TARN_NULL_ARGUMENT)
        self.assertIn("NULL", last_error())

    def test_null_engine(self):
        b = ctypes.byref
        buf, u = Buf(), ctypes.c_uint64(0)
        self.assertNull(lib.tarn_engine_close(None))
        self.assertNull(lib.tarn_engine_settle(None, 0))
        self.assertNull(lib.tarn_clock_now(None, b(u)))
        self.assertNull(lib.tarn_clock_set(None, 1))
        self.assertNull(lib.tarn_clock_advance(None, 1, b(u)))
        self.assertNull(lib.tarn_store_read(None, b"b", b"k", b(buf), None))
        self.assertNull(lib.tarn_store_read_all(None, b"b", b(buf)))
        self.assertNull(lib.tarn_store_list(None, b"b", 0, b(buf)))
        self.assertNull(lib.tarn_store_buckets(None, b(buf)))
        self.assertNull(lib.tarn_store_write(None, b"b", b"k", b"1", 1, None, b(u)))
        self.assertNull(lib.tarn_store_patch(None, b"b", b"k", b"[]", 2, None, b(u), b(buf)))
        self.assertNull(lib.tarn_store_remove(None, b"b", b"k", None, b(u)))
        self.assertNull(lib.tarn_store_last_version(None, b(u)))

    def test_null_builder_and_out_engine(self):
        out = ctypes.c_void_p()
        self.assertNull(lib.tarn_engine_builder_workers(None, 2))
        self.assertNull(lib.tarn_engine_builder_manual_clock(None, 0))
        self.assertNull(lib.tarn_engine_builder_build(None, ctypes.byref(out)))
        self.assertNull(lib.tarn_engine_new(None))
        builder = lib.tarn_engine_builder_new()
        try:
            self.assertNull(lib.tarn_engine_builder_build(builder, None))
        finally:
            lib.tarn_engine_builder_free(builder)

    def test_null_names_json_and_outputs(self):
        eng = self.new_engine()
        b = ctypes.byref
        buf, u = Buf(), ctypes.c_uint64(0)
        self.assertNull(lib.tarn_store_write(eng, None, b"k", b"1", 1, None, None))
        self.assertNull(lib.tarn_store_write(eng, b"b", None, b"1", 1, None, None))
        self.assertNull(lib.tarn_store_write(eng, b"b", b"k", None, 0, None, None))
        self.assertNull(lib.tarn_store_read(eng, None, b"k", b(buf), None))
        self.assertNull(lib.tarn_store_read(eng, b"b", None, b(buf), None))
        self.assertNull(lib.tarn_store_read(eng, b"b", b"k", None, None))
        self.assertNull(lib.tarn_store_read_all(eng, None, b(buf)))
        self.assertNull(lib.tarn_store_read_all(eng, b"b", None))
        self.assertNull(lib.tarn_store_list(eng, None, 0, b(buf)))
        self.assertNull(lib.tarn_store_list(eng, b"b", 0, None))
        self.assertNull(lib.tarn_store_buckets(eng, None))
        self.assertNull(lib.tarn_store_patch(eng, None, b"k", b"[]", 2, None, None, None))
        self.assertNull(lib.tarn_store_patch(eng, b"b", None, b"[]", 2, None, None, None))
        self.assertNull(lib.tarn_store_patch(eng, b"b", b"k", None, 0, None, None, None))
        self.assertNull(lib.tarn_store_remove(eng, None, b"k", None, None))
        self.assertNull(lib.tarn_store_remove(eng, b"b", None, None, None))
        self.assertNull(lib.tarn_store_last_version(eng, None))
        self.assertNull(lib.tarn_clock_now(eng, None))
        # Nothing was written by any of them.
        self.assertStatus(lib.tarn_store_last_version(eng, b(u)), TARN_OK)
        self.assertEqual(u.value, 0)
        # Optional outputs may be NULL.
        self.assertStatus(lib.tarn_store_write(eng, b"b", b"k", b"1", 1, None, None), TARN_OK)
        self.assertStatus(lib.tarn_clock_advance(eng, 1, None), TARN_OK)


class TestOutParamsUntouchedOnFailure(RawCase):
    def test_write_remove_patch(self):
        eng = self.new_engine()
        self.assertStatus(self.write(eng, b"b", b"k", b"1")[0], TARN_OK)
        v = ctypes.c_uint64(SENTINEL)
        opts = WriteOptions(TARN_WRITE_FAIL_IF_EXISTS, 0, 0)
        self.assertStatus(lib.tarn_store_write(eng, b"b", b"k", b"2", 1, ctypes.byref(opts), ctypes.byref(v)), TARN_EXISTS)
        self.assertEqual(v.value, SENTINEL)
        self.assertStatus(lib.tarn_store_write(eng, b"b", b"k", b"{", 1, None, ctypes.byref(v)), TARN_INVALID_JSON)
        self.assertEqual(v.value, SENTINEL)
        opts = WriteOptions(TARN_WRITE_IF_VERSION, 0, 99)
        self.assertStatus(lib.tarn_store_write(eng, b"b", b"k", b"2", 1, ctypes.byref(opts), ctypes.byref(v)), TARN_VERSION_CONFLICT)
        self.assertEqual(v.value, SENTINEL)
        self.assertStatus(lib.tarn_store_remove(eng, b"b", b"nope", None, ctypes.byref(v)), TARN_NOT_FOUND)
        self.assertEqual(v.value, SENTINEL)
        ropts = RemoveOptions(TARN_REMOVE_IF_VERSION, 99)
        self.assertStatus(lib.tarn_store_remove(eng, b"b", b"k", ctypes.byref(ropts), ctypes.byref(v)), TARN_VERSION_CONFLICT)
        self.assertEqual(v.value, SENTINEL)
        buf = sentinel_buf()
        ops = b'[{"op":"remove","path":"/x"}]'
        st = lib.tarn_store_patch(eng, b"b", b"k", ops, len(ops), None, ctypes.byref(v), ctypes.byref(buf))
        self.assertNotEqual(st, TARN_OK)
        self.assertTrue(last_error())
        self.assertEqual(v.value, SENTINEL)
        self.assertTrue(is_sentinel_buf(buf))

    def test_reads(self):
        eng = self.new_engine()
        buf = sentinel_buf()
        info = DocInfo(SENTINEL, SENTINEL, SENTINEL)
        self.assertStatus(lib.tarn_store_read(eng, b"b", b"missing", ctypes.byref(buf), ctypes.byref(info)), TARN_NOT_FOUND)
        self.assertTrue(is_sentinel_buf(buf))
        self.assertEqual((info.version, info.modified_ms, info.expires_ms), (SENTINEL,) * 3)
        self.assertStatus(lib.tarn_store_read(eng, b"\xff", b"k", ctypes.byref(buf), ctypes.byref(info)), TARN_INVALID_UTF8)
        self.assertTrue(is_sentinel_buf(buf))
        self.assertEqual(info.version, SENTINEL)
        self.assertStatus(lib.tarn_store_read_all(eng, b"", ctypes.byref(buf)), TARN_INVALID_ARGUMENT)
        self.assertTrue(is_sentinel_buf(buf))
        self.assertStatus(lib.tarn_store_list(eng, b"*", TARN_LIST_KEYS_ONLY, ctypes.byref(buf)), TARN_INVALID_ARGUMENT)
        self.assertTrue(is_sentinel_buf(buf))
        self.assertStatus(lib.tarn_store_list(eng, b"b", 0x80, ctypes.byref(buf)), TARN_INVALID_ARGUMENT)
        self.assertTrue(is_sentinel_buf(buf))
        self.assertStatus(lib.tarn_engine_close(eng), TARN_OK)
        self.assertStatus(lib.tarn_store_buckets(eng, ctypes.byref(buf)), TARN_CLOSED)
        self.assertTrue(is_sentinel_buf(buf))
        self.assertStatus(lib.tarn_store_read(eng, b"b", b"k", ctypes.byref(buf), ctypes.byref(info)), TARN_CLOSED)
        self.assertTrue(is_sentinel_buf(buf))

    def test_engine_and_clock(self):
        out = ctypes.c_void_p(SENTINEL)
        builder = lib.tarn_engine_builder_new()
        try:
            self.assertStatus(lib.tarn_engine_builder_workers(builder, 0), TARN_OK)  # checked by build
            self.assertStatus(lib.tarn_engine_builder_build(builder, ctypes.byref(out)), TARN_INVALID_ARGUMENT)
            self.assertEqual(out.value, SENTINEL)
        finally:
            lib.tarn_engine_builder_free(builder)
        sys_eng = self.new_engine(manual_clock=None)
        now = ctypes.c_uint64(SENTINEL)
        self.assertStatus(lib.tarn_clock_advance(sys_eng, 5, ctypes.byref(now)), TARN_NOT_SUPPORTED)
        self.assertEqual(now.value, SENTINEL)
        self.assertStatus(lib.tarn_clock_now(None, ctypes.byref(now)), TARN_NULL_ARGUMENT)
        self.assertEqual(now.value, SENTINEL)
        self.assertStatus(lib.tarn_store_last_version(None, ctypes.byref(now)), TARN_NULL_ARGUMENT)
        self.assertEqual(now.value, SENTINEL)
        eng = self.new_engine()
        self.assertStatus(lib.tarn_engine_close(eng), TARN_OK)
        self.assertStatus(lib.tarn_clock_advance(eng, 5, ctypes.byref(now)), TARN_CLOSED)
        self.assertEqual(now.value, SENTINEL)


class TestArguments(RawCase):
    def test_unknown_flag_bits(self):
        eng = self.new_engine()
        self.assertStatus(self.write(eng, b"b", b"k", b"1")[0], TARN_OK)
        st, _ = self.write(eng, b"b", b"k", b"2", WriteOptions(0x100, 0, 0))
        self.assertStatus(st, TARN_INVALID_ARGUMENT)
        self.assertIn("flag", last_error())
        opts = PatchOptions(0x100, 0)
        self.assertStatus(lib.tarn_store_patch(eng, b"b", b"k", b"[]", 2, ctypes.byref(opts), None, None), TARN_INVALID_ARGUMENT)
        ropts = RemoveOptions(0x100, 0)
        self.assertStatus(lib.tarn_store_remove(eng, b"b", b"k", ctypes.byref(ropts), None), TARN_INVALID_ARGUMENT)
        buf = Buf()
        self.assertStatus(lib.tarn_store_list(eng, b"b", 2, ctypes.byref(buf)), TARN_INVALID_ARGUMENT)
        # Nothing changed.
        buf = Buf()
        info = DocInfo()
        self.assertStatus(lib.tarn_store_read(eng, b"b", b"k", ctypes.byref(buf), ctypes.byref(info)), TARN_OK)
        self.assertEqual((buf_bytes(buf), info.version), (b"1", 1))
        lib.tarn_buf_free(ctypes.byref(buf))

    def test_options_null_means_defaults(self):
        eng = self.new_engine()
        st, v1 = self.write(eng, b"b", b"k", b"1")
        self.assertStatus(st, TARN_OK)
        st, v2 = self.write(eng, b"b", b"k", b"2")  # no fail-if-exists by default
        self.assertStatus(st, TARN_OK)
        self.assertGreater(v2, v1)

    def test_ttl_and_if_version_options(self):
        eng = self.new_engine()
        st, v = self.write(eng, b"t", b"k", b"1", WriteOptions(TARN_WRITE_IF_VERSION, 100, 0))
        self.assertStatus(st, TARN_OK)
        info = DocInfo()
        buf = Buf()
        self.assertStatus(lib.tarn_store_read(eng, b"t", b"k", ctypes.byref(buf), ctypes.byref(info)), TARN_OK)
        lib.tarn_buf_free(ctypes.byref(buf))
        self.assertEqual((info.version, info.expires_ms), (v, 1100))
        now = ctypes.c_uint64(0)
        self.assertStatus(lib.tarn_clock_advance(eng, 100, ctypes.byref(now)), TARN_OK)
        self.assertEqual(now.value, 1100)
        self.assertStatus(lib.tarn_store_read(eng, b"t", b"k", ctypes.byref(buf), None), TARN_NOT_FOUND)
        self.assertStatus(lib.tarn_engine_settle(eng, 0), TARN_OK)
        self.assertStatus(lib.tarn_clock_set(eng, 1000), TARN_INVALID_ARGUMENT)

    def test_huge_json_length_is_refused(self):
        eng = self.new_engine()
        st, _ = self.write(eng, b"b", b"k", b"1")
        data = b"1"
        st = lib.tarn_store_write(eng, b"b", b"big", data, 1 << 63, None, None)
        self.assertStatus(st, TARN_INVALID_ARGUMENT)

    def test_invalid_utf8_names(self):
        eng = self.new_engine()
        self.assertStatus(self.write(eng, b"\xff", b"k", b"1")[0], TARN_INVALID_UTF8)
        self.assertIn("bucket", last_error())
        self.assertStatus(self.write(eng, b"b", b"\xc3", b"1")[0], TARN_INVALID_UTF8)
        self.assertIn("key", last_error())


class TestLastError(RawCase):
    def test_per_thread_and_kept_across_successes(self):
        eng = self.new_engine()
        self.assertStatus(lib.tarn_store_read(eng, b"b", b"first-miss", ctypes.byref(Buf()), None), TARN_NOT_FOUND)
        msg = last_error()
        self.assertIn("first-miss", msg)
        # A successful call leaves the message alone.
        self.assertStatus(self.write(eng, b"b", b"k", b"1")[0], TARN_OK)
        self.assertEqual(last_error(), msg)
        seen = {}
        barrier = threading.Barrier(4)

        def worker(i):
            seen[(i, "fresh")] = last_error()  # nothing failed on this thread yet
            barrier.wait()
            lib.tarn_store_read(eng, b"b", f"miss-{i}".encode(), ctypes.byref(Buf()), None)
            barrier.wait()  # every thread has failed before anyone reads its message
            seen[(i, "after")] = last_error()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(4):
            self.assertEqual(seen[(i, "fresh")], "")
            self.assertIn(f"miss-{i}", seen[(i, "after")])
        self.assertEqual(last_error(), msg)


# ---------------------------------------------------------------------------------------
# ABI 2: layouts, sessions, the event bus, change metadata.
# ---------------------------------------------------------------------------------------


def header_text():
    with open(os.path.join(ROOT, "include", "tarn.h"), encoding="utf-8") as f:
        return f.read()


class TestAbi2Header(RawCase):
    def test_constants_match_the_header(self):
        h = header_text()
        defines = dict(re.findall(r"#define (TARN_\w+) (\d+)\s*$", h, re.M))
        statuses = dict(re.findall(r"\b(TARN_\w+) = (\d+),", h))
        here = {k: v for k, v in globals().items() if k.startswith("TARN_") and isinstance(v, int)}
        self.assertGreaterEqual(len(here), 20)
        for name, value in here.items():
            with self.subTest(name=name):
                self.assertEqual(int(defines.get(name, statuses.get(name, -1))), value)
        self.assertEqual(len(statuses), len(STATUS_NAMES))
        for value, name in enumerate(STATUS_NAMES):
            self.assertEqual(int(statuses[name]), value)

    def test_struct_sizes_and_offsets(self):
        p = ctypes.sizeof(ctypes.c_void_p)
        z = ctypes.sizeof(ctypes.c_size_t)
        meta = 8 + 2 * p + z
        self.assertEqual(ctypes.sizeof(ChangeMeta), meta)
        self.assertEqual(ChangeMeta.user_data_len.offset, 8 + 2 * p)
        self.assertEqual(ctypes.sizeof(WriteOptions), 24 + meta)
        self.assertEqual(WriteOptions.meta.offset, 24)
        self.assertEqual(ctypes.sizeof(PatchOptions), 16 + meta)
        self.assertEqual(PatchOptions.meta.offset, 16)
        self.assertEqual(ctypes.sizeof(RemoveOptions), 16 + meta)
        self.assertEqual(RemoveOptions.meta.offset, 16)
        self.assertEqual(ctypes.sizeof(ListenOptions), 24 + z)
        self.assertEqual(ListenOptions.from_version.offset, 16 + z)
        self.assertEqual(ctypes.sizeof(ListenerStats), 24)


class BusCase(RawCase):
    def subscribe(self, eng, bucket=b"b", key=b"*", opts=None, session=0):
        out = ctypes.c_uint64(SENTINEL)
        st = lib.tarn_bus_subscribe(
            eng, session, bucket, key, ctypes.byref(opts) if opts else None, ctypes.byref(out)
        )
        self.assertStatus(st, TARN_OK)
        self.assertNotEqual(out.value, SENTINEL)
        return out.value

    def next_event(self, eng, lid, timeout_ms=0):
        buf = Buf()
        st = lib.tarn_listener_next(eng, lid, timeout_ms, ctypes.byref(buf))
        if st == TARN_TIMEOUT:
            return None
        self.assertStatus(st, TARN_OK)
        try:
            return json.loads(buf_bytes(buf))
        finally:
            lib.tarn_buf_free(ctypes.byref(buf))

    def drain(self, eng, lid):
        out = []
        while True:
            e = self.next_event(eng, lid)
            if e is None:
                return out
            out.append(e)

    def open_session(self, eng, client=b"client", lease_ms=0):
        sid = ctypes.c_uint64(0)
        self.assertStatus(lib.tarn_session_open(eng, client, lease_ms, ctypes.byref(sid)), TARN_OK)
        self.assertNotEqual(sid.value, 0)
        return sid.value


class TestRawSessions(BusCase):
    def test_open_keepalive_close(self):
        eng = self.new_engine()
        a = self.open_session(eng, b"a")
        b = self.open_session(eng, b"b")
        self.assertNotEqual(a, b)
        is_open = ctypes.c_bool(False)
        self.assertStatus(lib.tarn_session_is_open(eng, a, ctypes.byref(is_open)), TARN_OK)
        self.assertTrue(is_open.value)
        self.assertStatus(lib.tarn_session_keepalive(eng, a), TARN_OK)  # no lease: fine
        self.assertStatus(lib.tarn_session_close(eng, a), TARN_OK)
        self.assertStatus(lib.tarn_session_close(eng, a), TARN_NOT_FOUND)
        self.assertStatus(lib.tarn_session_keepalive(eng, a), TARN_NOT_FOUND)
        is_open = ctypes.c_bool(True)
        self.assertStatus(lib.tarn_session_is_open(eng, a, ctypes.byref(is_open)), TARN_NOT_FOUND)
        self.assertTrue(is_open.value, "out_open untouched on failure")
        for sid in (0, 12345, (1 << 64) - 1):
            self.assertStatus(lib.tarn_session_close(eng, sid), TARN_NOT_FOUND)
        self.assertStatus(lib.tarn_session_close(eng, b), TARN_OK)

    def test_open_failures_leave_the_output_alone(self):
        eng = self.new_engine()
        out = ctypes.c_uint64(SENTINEL)
        for client, want in [
            (b"", TARN_INVALID_ARGUMENT),
            (b"x" * 257, TARN_INVALID_ARGUMENT),
            (b"a\nb", TARN_INVALID_ARGUMENT),
            (b"\xff", TARN_INVALID_UTF8),
            (None, TARN_NULL_ARGUMENT),
        ]:
            with self.subTest(client=client):
                self.assertStatus(lib.tarn_session_open(eng, client, 0, ctypes.byref(out)), want)
                self.assertEqual(out.value, SENTINEL)
        self.assertStatus(lib.tarn_session_open(eng, b"ok", 0, None), TARN_NULL_ARGUMENT)
        self.assertStatus(lib.tarn_session_open(eng, b"x" * 256, 0, ctypes.byref(out)), TARN_OK)

    def test_lease_runs_out_on_the_manual_clock(self):
        eng = self.new_engine()
        sid = self.open_session(eng, b"leased", lease_ms=100)
        now = ctypes.c_uint64(0)
        self.assertStatus(lib.tarn_clock_advance(eng, 99, ctypes.byref(now)), TARN_OK)
        self.assertStatus(lib.tarn_engine_settle(eng, 0), TARN_OK)
        is_open = ctypes.c_bool(False)
        self.assertStatus(lib.tarn_session_is_open(eng, sid, ctypes.byref(is_open)), TARN_OK)
        self.assertTrue(is_open.value)
        self.assertStatus(lib.tarn_clock_advance(eng, 1, ctypes.byref(now)), TARN_OK)
        self.assertStatus(lib.tarn_engine_settle(eng, 0), TARN_OK)
        self.assertStatus(lib.tarn_session_is_open(eng, sid, ctypes.byref(is_open)), TARN_OK)
        self.assertFalse(is_open.value, "closed by its lease, id still known")
        self.assertStatus(lib.tarn_session_keepalive(eng, sid), TARN_CLOSED)
        self.assertStatus(lib.tarn_session_close(eng, sid), TARN_OK)
        self.assertStatus(lib.tarn_session_close(eng, sid), TARN_NOT_FOUND)

    def test_expire_session_write(self):
        eng = self.new_engine()
        sid = self.open_session(eng)
        opts = WriteOptions(TARN_WRITE_EXPIRE_SESSION, 0, 0)
        self.assertStatus(self.write(eng, b"es", b"k", b"1", opts)[0], TARN_INVALID_ARGUMENT)
        self.assertIn("session", last_error())
        opts.meta.session = sid
        self.assertStatus(self.write(eng, b"es", b"k", b"1", opts)[0], TARN_OK)
        self.assertStatus(self.write(eng, b"es", b"keep", b"1")[0], TARN_OK)
        self.assertStatus(lib.tarn_session_close(eng, sid), TARN_OK)
        self.assertStatus(self.write(eng, b"es", b"k", b"1", opts)[0], TARN_NOT_FOUND)
        buf = Buf()
        self.assertStatus(lib.tarn_store_list(eng, b"es", TARN_LIST_KEYS_ONLY, ctypes.byref(buf)), TARN_OK)
        self.assertEqual(buf_bytes(buf), b'["keep"]')
        lib.tarn_buf_free(ctypes.byref(buf))


class TestRawBus(BusCase):
    def test_callback_gets_json_and_its_user_data(self):
        eng = self.new_engine()
        got = queue.Queue()

        def on_event(data, length, user_data):
            got.put((ctypes.string_at(data, length), user_data))

        self.callback = EventFn(on_event)  # alive as long as the test (and its engine)
        tag = ctypes.c_int(7)
        out = ctypes.c_uint64(0)
        opts = ListenOptions(TARN_LISTEN_SEND_VALUES, 0, 0, 0)
        self.assertStatus(
            lib.tarn_bus_listen(eng, 0, b"cb", b"*", ctypes.byref(opts), self.callback,
                                ctypes.addressof(tag), ctypes.byref(out)),
            TARN_OK,
        )
        st, v = self.write(eng, b"cb", b"k", b'{"a":1}')
        self.assertStatus(st, TARN_OK)
        raw, user_data = got.get(timeout=10)
        self.assertEqual(user_data, ctypes.addressof(tag))
        e = json.loads(raw)
        self.assertEqual(
            list(e),
            ["kind", "bucket", "key", "version", "timestamp_ms", "session", "request_id",
             "user_data", "value", "ops", "missed"],
        )
        self.assertEqual(
            e,
            {"kind": "write", "bucket": "cb", "key": "k", "version": v, "timestamp_ms": 1000,
             "session": None, "request_id": None, "user_data": None, "value": {"a": 1},
             "ops": None, "missed": 0},
        )
        self.assertStatus(lib.tarn_engine_settle(eng, 0), TARN_OK)
        self.assertStatus(lib.tarn_listener_next(eng, out.value, 0, ctypes.byref(Buf())), TARN_NOT_SUPPORTED)
        fd = ctypes.c_int32(-7)
        self.assertStatus(lib.tarn_listener_fd(eng, out.value, ctypes.byref(fd)), TARN_NOT_SUPPORTED)
        self.assertEqual(fd.value, -7)
        stats = ListenerStats()
        self.assertStatus(lib.tarn_listener_get_stats(eng, out.value, ctypes.byref(stats)), TARN_OK)
        self.assertEqual((stats.delivered, stats.missed, stats.panics), (1, 0, 0))
        self.assertStatus(lib.tarn_listener_free(eng, out.value), TARN_OK)
        self.assertStatus(lib.tarn_listener_free(eng, out.value), TARN_NOT_FOUND)

    def test_null_callback_and_bad_options(self):
        eng = self.new_engine()
        out = ctypes.c_uint64(SENTINEL)
        self.assertStatus(
            lib.tarn_bus_listen(eng, 0, b"b", b"*", None, EventFn(), None, ctypes.byref(out)),
            TARN_NULL_ARGUMENT,
        )
        self.assertIn("callback", last_error())
        self.assertEqual(out.value, SENTINEL)
        bad = ListenOptions(0x10, 0, 0, 0)
        self.assertStatus(lib.tarn_bus_subscribe(eng, 0, b"b", b"*", ctypes.byref(bad), ctypes.byref(out)),
                          TARN_INVALID_ARGUMENT)
        self.assertIn("flag", last_error())
        self.assertStatus(lib.tarn_bus_subscribe(eng, 0, b"$x", b"*", None, ctypes.byref(out)),
                          TARN_INVALID_ARGUMENT)
        self.assertStatus(lib.tarn_bus_subscribe(eng, 0, b"b", b"\xff", None, ctypes.byref(out)),
                          TARN_INVALID_UTF8)
        self.assertStatus(lib.tarn_bus_subscribe(eng, 99, b"b", b"*", None, ctypes.byref(out)),
                          TARN_NOT_FOUND)
        self.assertEqual(out.value, SENTINEL)

    def test_pull_next_fd_stats_free(self):
        eng = self.new_engine()
        lid = self.subscribe(eng, b"p", b"*")
        buf = sentinel_buf()
        self.assertStatus(lib.tarn_listener_next(eng, lid, 0, ctypes.byref(buf)), TARN_TIMEOUT)
        self.assertTrue(is_sentinel_buf(buf), "out_event untouched on TARN_TIMEOUT")
        self.assertStatus(lib.tarn_listener_next(eng, lid, 1, ctypes.byref(buf)), TARN_TIMEOUT)
        self.assertTrue(is_sentinel_buf(buf))
        self.assertStatus(lib.tarn_listener_next(eng, lid, 0, None), TARN_NULL_ARGUMENT)
        fd = ctypes.c_int32(-1)
        self.assertStatus(lib.tarn_listener_fd(eng, lid, ctypes.byref(fd)), TARN_OK)
        self.assertGreaterEqual(fd.value, 0)
        st, v = self.write(eng, b"p", b"k", b"[1]")
        self.assertStatus(st, TARN_OK)
        e = self.next_event(eng, lid)
        self.assertEqual((e["kind"], e["version"], e["value"]), ("write", v, None))
        stats = ListenerStats()
        self.assertStatus(lib.tarn_listener_get_stats(eng, lid, ctypes.byref(stats)), TARN_OK)
        self.assertEqual((stats.delivered, stats.missed, stats.panics), (1, 0, 0))
        self.assertStatus(lib.tarn_listener_get_stats(eng, lid, None), TARN_NULL_ARGUMENT)
        self.assertStatus(lib.tarn_listener_fd(eng, lid, None), TARN_NULL_ARGUMENT)
        self.assertStatus(lib.tarn_listener_free(eng, lid), TARN_OK)
        # A freed id: NOT_FOUND everywhere, outputs untouched.
        stats = ListenerStats(SENTINEL, SENTINEL, SENTINEL)
        fd = ctypes.c_int32(-7)
        buf = sentinel_buf()
        self.assertStatus(lib.tarn_listener_next(eng, lid, 0, ctypes.byref(buf)), TARN_NOT_FOUND)
        self.assertStatus(lib.tarn_listener_fd(eng, lid, ctypes.byref(fd)), TARN_NOT_FOUND)
        self.assertStatus(lib.tarn_listener_get_stats(eng, lid, ctypes.byref(stats)), TARN_NOT_FOUND)
        self.assertStatus(lib.tarn_listener_free(eng, lid), TARN_NOT_FOUND)
        self.assertTrue(is_sentinel_buf(buf))
        self.assertEqual(fd.value, -7)
        self.assertEqual((stats.delivered, stats.missed, stats.panics), (SENTINEL,) * 3)

    def test_zero_capacity_means_1024(self):
        eng = self.new_engine()
        lid = self.subscribe(eng, b"cap", b"k", ListenOptions(0, 0, 0, 0))
        for i in range(1030):
            self.assertStatus(self.write(eng, b"cap", b"k", b"1")[0], TARN_OK)
        stats = ListenerStats()
        self.assertStatus(lib.tarn_listener_get_stats(eng, lid, ctypes.byref(stats)), TARN_OK)
        self.assertEqual(stats.missed, 6)
        self.assertEqual(len(self.drain(eng, lid)), 1024)

    def test_from_version_and_too_old(self):
        eng = self.new_engine(change_log_capacity=3)
        versions = [self.write(eng, b"fv", f"k{i}".encode(), b"1")[1] for i in range(6)]
        out = ctypes.c_uint64(SENTINEL)
        opts = ListenOptions(TARN_LISTEN_FROM_VERSION, 0, 0, versions[1])
        self.assertStatus(lib.tarn_bus_subscribe(eng, 0, b"fv", b"*", ctypes.byref(opts), ctypes.byref(out)),
                          TARN_TOO_OLD)
        self.assertIn("too old", last_error())
        self.assertEqual(out.value, SENTINEL)
        opts.from_version = versions[2]
        lid = self.subscribe(eng, b"fv", b"*", opts)
        self.assertEqual([e["version"] for e in self.drain(eng, lid)], versions[3:])
        # Without the flag, from_version is ignored.
        lid2 = self.subscribe(eng, b"fv", b"*", ListenOptions(0, 0, 0, 1))
        self.assertEqual(self.drain(eng, lid2), [])

    def test_signals(self):
        eng = self.new_engine()
        lid = self.subscribe(eng, b"s", b"*", ListenOptions(TARN_LISTEN_SEND_VALUES, 0, 0, 0))
        self.assertStatus(lib.tarn_bus_signal(eng, 0, b"s", b"none", None, 0), TARN_OK)
        self.assertStatus(lib.tarn_bus_signal(eng, 0, b"s", b"prefix", b"[1] garbage", 3), TARN_OK)
        self.assertStatus(lib.tarn_bus_signal(eng, 0, b"s", b"bad", b"{bad", 4), TARN_INVALID_JSON)
        self.assertStatus(lib.tarn_bus_signal(eng, 0, None, b"k", None, 0), TARN_NULL_ARGUMENT)
        self.assertStatus(lib.tarn_bus_signal(eng, 0, b"s", None, None, 0), TARN_NULL_ARGUMENT)
        self.assertStatus(lib.tarn_bus_signal(eng, 0, b"*", b"k", None, 0), TARN_INVALID_ARGUMENT)
        self.assertStatus(lib.tarn_bus_signal(eng, 77, b"s", b"k", None, 0), TARN_NOT_FOUND)
        got = self.drain(eng, lid)
        self.assertEqual([(e["kind"], e["key"], e["value"], e["version"]) for e in got],
                         [("signal", "none", None, 0), ("signal", "prefix", [1], 0)])
        v = ctypes.c_uint64(SENTINEL)
        self.assertStatus(lib.tarn_store_last_version(eng, ctypes.byref(v)), TARN_OK)
        self.assertEqual(v.value, 0, "signals are never stored")

    def test_change_meta_pass_through(self):
        eng = self.new_engine()
        lid = self.subscribe(eng, b"m", b"*")
        sid = self.open_session(eng)
        user = ctypes.create_string_buffer(b'{"u":[1,2]} trailing bytes not passed')
        opts = WriteOptions(0, 0, 0, ChangeMeta(sid, b"req-7", ctypes.addressof(user), 11))
        self.assertStatus(self.write(eng, b"m", b"k", b"1", opts)[0], TARN_OK)
        popts = PatchOptions(0, 0, ChangeMeta(0, b"req-8", None, 0))
        self.assertStatus(lib.tarn_store_patch(eng, b"m", b"k", b"[]", 2, ctypes.byref(popts), None, None), TARN_OK)
        # user_data NULL: none, whatever the length says.
        ropts = RemoveOptions(0, 0, ChangeMeta(0, None, None, 99))
        self.assertStatus(lib.tarn_store_remove(eng, b"m", b"k", ctypes.byref(ropts), None), TARN_OK)
        got = self.drain(eng, lid)
        self.assertEqual(
            [(e["kind"], e["session"], e["request_id"], e["user_data"]) for e in got],
            [("write", sid, "req-7", {"u": [1, 2]}), ("patch", None, "req-8", None), ("remove", None, None, None)],
        )
        self.assertEqual(got[1]["ops"], [])
        # Bad metadata: refused before anything changes.
        bad_json = ctypes.create_string_buffer(b"{bad")
        for meta, want in [
            (ChangeMeta(0, None, ctypes.addressof(bad_json), 4), TARN_INVALID_JSON),
            (ChangeMeta(0, b"\xff", None, 0), TARN_INVALID_UTF8),
            (ChangeMeta(0, b"r" * 2000, None, 0), TARN_TOO_LARGE),
        ]:
            with self.subTest(meta=meta.request_id):
                st, _ = self.write(eng, b"m", b"k", b"1", WriteOptions(0, 0, 0, meta))
                self.assertStatus(st, want)
                self.assertStatus(lib.tarn_store_patch(eng, b"m", b"k", b"[]", 2, ctypes.byref(PatchOptions(0, 0, meta)), None, None),
                                  TARN_NOT_FOUND if want == TARN_TOO_LARGE else want)
        self.assertEqual(self.drain(eng, lid), [])

    def test_session_listener_and_ignore_own(self):
        eng = self.new_engine()
        sid = self.open_session(eng)
        lid = self.subscribe(eng, b"o", b"*", ListenOptions(TARN_LISTEN_IGNORE_OWN, 0, 0, 0), session=sid)
        own = WriteOptions(0, 0, 0, ChangeMeta(sid, None, None, 0))
        self.assertStatus(self.write(eng, b"o", b"mine", b"1", own)[0], TARN_OK)
        self.assertStatus(self.write(eng, b"o", b"theirs", b"1")[0], TARN_OK)
        self.assertEqual([e["key"] for e in self.drain(eng, lid)], ["theirs"])
        self.assertStatus(lib.tarn_session_close(eng, sid), TARN_OK)
        self.assertStatus(lib.tarn_listener_next(eng, lid, 0, ctypes.byref(Buf())), TARN_CLOSED)
        self.assertStatus(lib.tarn_listener_free(eng, lid), TARN_OK)

    def test_null_engine(self):
        b = ctypes.byref
        u, buf, fd, stats, flag = ctypes.c_uint64(0), Buf(), ctypes.c_int32(0), ListenerStats(), ctypes.c_bool()
        cb = EventFn(lambda *a: None)
        for name, st in [
            ("session_open", lib.tarn_session_open(None, b"c", 0, b(u))),
            ("session_keepalive", lib.tarn_session_keepalive(None, 1)),
            ("session_is_open", lib.tarn_session_is_open(None, 1, b(flag))),
            ("session_close", lib.tarn_session_close(None, 1)),
            ("bus_listen", lib.tarn_bus_listen(None, 0, b"b", b"k", None, cb, None, b(u))),
            ("bus_subscribe", lib.tarn_bus_subscribe(None, 0, b"b", b"k", None, b(u))),
            ("listener_next", lib.tarn_listener_next(None, 1, 0, b(buf))),
            ("listener_fd", lib.tarn_listener_fd(None, 1, b(fd))),
            ("listener_get_stats", lib.tarn_listener_get_stats(None, 1, b(stats))),
            ("listener_free", lib.tarn_listener_free(None, 1)),
            ("bus_signal", lib.tarn_bus_signal(None, 0, b"b", b"k", None, 0)),
            ("builder_change_log_capacity", lib.tarn_engine_builder_change_log_capacity(None, 1)),
        ]:
            with self.subTest(fn=name):
                self.assertStatus(st, TARN_NULL_ARGUMENT)
                self.assertIn("NULL", last_error())

    def test_null_names_and_outputs(self):
        eng = self.new_engine()
        b = ctypes.byref
        u = ctypes.c_uint64(SENTINEL)
        cb = EventFn(lambda *a: None)
        sid = self.open_session(eng)
        for name, st in [
            ("listen bucket", lib.tarn_bus_listen(eng, 0, None, b"k", None, cb, None, b(u))),
            ("listen key", lib.tarn_bus_listen(eng, 0, b"b", None, None, cb, None, b(u))),
            ("listen out", lib.tarn_bus_listen(eng, 0, b"b", b"k", None, cb, None, None)),
            ("subscribe bucket", lib.tarn_bus_subscribe(eng, 0, None, b"k", None, b(u))),
            ("subscribe key", lib.tarn_bus_subscribe(eng, 0, b"b", None, None, b(u))),
            ("subscribe out", lib.tarn_bus_subscribe(eng, 0, b"b", b"k", None, None)),
            ("is_open out", lib.tarn_session_is_open(eng, sid, None)),
        ]:
            with self.subTest(fn=name):
                self.assertStatus(st, TARN_NULL_ARGUMENT)
        self.assertEqual(u.value, SENTINEL)

    def test_closed_engine(self):
        eng = self.new_engine()
        lid = self.subscribe(eng)
        sid = self.open_session(eng)
        self.assertStatus(lib.tarn_engine_close(eng), TARN_OK)
        u = ctypes.c_uint64(SENTINEL)
        self.assertStatus(lib.tarn_bus_subscribe(eng, 0, b"b", b"*", None, ctypes.byref(u)), TARN_CLOSED)
        self.assertStatus(lib.tarn_session_open(eng, b"c", 0, ctypes.byref(u)), TARN_CLOSED)
        self.assertStatus(lib.tarn_bus_signal(eng, 0, b"b", b"k", None, 0), TARN_CLOSED)
        self.assertStatus(lib.tarn_session_keepalive(eng, sid), TARN_CLOSED)
        self.assertEqual(u.value, SENTINEL)
        # Ids can still be released after a close (and freeing the engine releases the rest).
        self.assertStatus(lib.tarn_listener_free(eng, lid), TARN_OK)
        self.assertStatus(lib.tarn_session_close(eng, sid), TARN_OK)


def main():
    prog = unittest.main(exit=False, verbosity=2)
    result = prog.result
    if result.testsRun == 0:
        print("error: no tests ran", file=sys.stderr)
        return 1
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
