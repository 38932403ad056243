"""Tests of the tarn store through the Python wrapper (python/tarn.py).

Run from the repository root:

    TARN_LIB=target/debug/libtarn.so PYTHONPATH=python python3 ffi-tests/python/test_store.py

Standard library only (unittest). Exits non-zero when a test fails or when no test ran.
Nothing here sleeps: TTLs are driven by the manual clock and settle(), races by
threading.Barrier.
"""

import contextlib
import gc
import os
import re
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
HEADER = os.path.join(ROOT, "include", "tarn.h")
# PYTHONPATH (python/) comes first; this is only a fallback for running by hand.
sys.path.append(os.path.join(ROOT, "python"))

import tarn  # noqa: E402


def _no_sleep(*_args, **_kwargs):
    raise AssertionError("time.sleep is banned in these tests")


time.sleep = _no_sleep

T0 = 1_700_000_000_000  # manual clock start, ms since the epoch
U64_MAX = (1 << 64) - 1

ALL_ERROR_CLASSES = {
    tarn.Status.NOT_FOUND: tarn.NotFound,
    tarn.Status.EXISTS: tarn.Exists,
    tarn.Status.INVALID_ARGUMENT: tarn.InvalidArgument,
    tarn.Status.NULL_ARGUMENT: tarn.NullArgument,
    tarn.Status.INVALID_UTF8: tarn.InvalidUtf8,
    tarn.Status.INVALID_JSON: tarn.InvalidJson,
    tarn.Status.INVALID_PATCH: tarn.InvalidPatch,
    tarn.Status.PATCH_PATH_NOT_FOUND: tarn.PatchPathNotFound,
    tarn.Status.PATCH_TEST_FAILED: tarn.PatchTestFailed,
    tarn.Status.VERSION_CONFLICT: tarn.VersionConflict,
    tarn.Status.TOO_LARGE: tarn.TooLarge,
    tarn.Status.FULL: tarn.Full,
    tarn.Status.TIMEOUT: tarn.Timeout,
    tarn.Status.NOT_SUPPORTED: tarn.NotSupported,
    tarn.Status.CLOSED: tarn.Closed,
    tarn.Status.PANIC: tarn.Panic,
    tarn.Status.TOO_OLD: tarn.TooOld,
}


def snapshot(eng):
    """Everything observable about a store: last version, buckets, and every document's
    exact bytes and metadata."""
    s = eng.store
    docs = []
    buckets = s.buckets()
    for b in buckets:
        for entry in s.read_all(b):
            d = s.read(b, entry["key"])
            docs.append((b, entry["key"], d.json, d.version, d.modified_ms, d.expires_ms))
    return (s.last_version(), buckets, docs)


class TarnCase(unittest.TestCase):
    """Helpers shared by the tests."""

    def engine(self, **kw):
        kw.setdefault("manual_clock", T0)
        kw.setdefault("workers", 2)
        eng = tarn.Engine(**kw)
        self.addCleanup(eng.free)
        return eng

    def seeded(self, **kw):
        """An engine holding a few documents, so 'unchanged' checks have something to
        compare."""
        eng = self.engine(**kw)
        s = eng.store
        s.write_json("seed", "a", b'{"z": 1,  "a": [1, 2, 3] }')
        s.write("seed", "b", {"x": "y"}, ttl_ms=60_000)
        s.write("other", "c", [1, 2, 3])
        return eng

    def assertTarnError(self, cls, fn, *args, **kwargs):
        """fn(*args, **kwargs) raises exactly `cls`, with its status, status name and a
        non-empty message. Returns the exception."""
        with self.assertRaises(cls) as cm:
            fn(*args, **kwargs)
        e = cm.exception
        self.assertIs(type(e), cls)
        self.assertIsInstance(e, tarn.Error)
        self.assertEqual(e.status, cls.STATUS)
        self.assertIsInstance(e.status, int)
        self.assertEqual(e.status_name, "TARN_" + tarn.Status(cls.STATUS).name)
        self.assertIsInstance(e.message, str)
        self.assertTrue(e.message.strip(), f"{cls.__name__} has an empty message")
        self.assertIn(e.message, str(e))
        return e

    @contextlib.contextmanager
    def unchanged(self, eng):
        """The store is exactly the same after the block."""
        before = snapshot(eng)
        yield
        self.assertEqual(snapshot(eng), before)

    def assertFails(self, eng, cls, fn, *args, **kwargs):
        """fn fails with cls (see assertTarnError) and leaves the store unchanged."""
        with self.unchanged(eng):
            return self.assertTarnError(cls, fn, *args, **kwargs)


# ---------------------------------------------------------------------------------------
# The module itself: library, ABI, constants, declarations.
# ---------------------------------------------------------------------------------------


def _strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


class TestModule(TarnCase):
    @classmethod
    def setUpClass(cls):
        with open(HEADER, encoding="utf-8") as f:
            cls.header = f.read()
        cls.code = _strip_comments(cls.header)
        with open(tarn.__file__, encoding="utf-8") as f:
            cls.source = f.read()

    def header_functions(self):
        found = re.findall(r"([\w\s\*]+?)\b(tarn_\w+)\(([^)]*)\);", self.code)
        funcs = {}
        for ret, name, params in found:
            params = " ".join(params.split())
            n = 0 if params in ("", "void") else params.count(",") + 1
            funcs[name] = (" ".join(ret.split()), n)
        return funcs

    def test_versions(self):
        self.assertRegex(tarn.version(), r"^\d+\.\d+\.\d+")
        self.assertEqual(tarn.__version__, tarn.version())
        self.assertEqual(tarn.abi_version(), 2)
        self.assertEqual(tarn.ABI_VERSION, 2)
        m = re.search(r"#define TARN_ABI_VERSION (\d+)", self.header)
        self.assertEqual(int(m.group(1)), tarn.ABI_VERSION, "header and wrapper agree")
        self.assertEqual(tarn.TARN_ABI_VERSION, tarn.abi_version())
        with open(os.path.join(ROOT, "Cargo.toml"), encoding="utf-8") as f:
            m = re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.M)
        self.assertEqual(tarn.version(), m.group(1))

    def test_library_path(self):
        self.assertTrue(os.path.exists(tarn.library_path()))
        if os.environ.get("TARN_LIB"):
            self.assertEqual(tarn.library_path(), os.environ["TARN_LIB"])

    def test_every_header_function_is_declared(self):
        funcs = self.header_functions()
        self.assertGreaterEqual(len(funcs), 41)
        for name in [
            "tarn_engine_builder_change_log_capacity",
            "tarn_session_open",
            "tarn_session_keepalive",
            "tarn_session_is_open",
            "tarn_session_close",
            "tarn_bus_listen",
            "tarn_bus_subscribe",
            "tarn_listener_next",
            "tarn_listener_fd",
            "tarn_listener_get_stats",
            "tarn_listener_free",
            "tarn_bus_signal",
        ]:
            self.assertIn(name, funcs, "an ABI 2 function is missing from the header")
        for name, (ret, nparams) in funcs.items():
            with self.subTest(name=name):
                self.assertRegex(self.source, r"\b" + name + r"\b")
                self.assertIn(name, tarn._SIGNATURES)
                f = getattr(tarn._lib, name)
                self.assertIsNotNone(f.argtypes)
                self.assertEqual(len(f.argtypes), nparams)
                if ret == "void":
                    self.assertIsNone(f.restype)
                else:
                    self.assertIsNotNone(f.restype)
                if ret.startswith("enum tarn_status"):
                    self.assertIs(f.restype, tarn._status_t)
        self.assertEqual(set(tarn._SIGNATURES), set(funcs))

    def test_every_define_is_mirrored(self):
        defines = re.findall(r"#define (\w+) (\d+)\s*$", self.header, re.M)
        names = [n for n, _ in defines]
        self.assertGreaterEqual(len(defines), 13)
        for name in ["TARN_LISTEN_SEND_VALUES", "TARN_LISTEN_IGNORE_OWN", "TARN_LISTEN_BLOCK",
                     "TARN_LISTEN_FROM_VERSION", "TARN_WRITE_EXPIRE_SESSION", "TARN_MAX_CLIENT_ID_BYTES"]:
            self.assertIn(name, names)
        for name, value in defines:
            with self.subTest(name=name):
                self.assertEqual(getattr(tarn, name), int(value))
        self.assertIn("tarn_status_ALL", self.header)
        m = re.search(r"#define tarn_status_ALL \{([^}]*)\}", self.header)
        listed = [n.strip() for n in m.group(1).split(",") if n.strip()]
        self.assertEqual([getattr(tarn, n) for n in listed], list(tarn.tarn_status_ALL))
        self.assertEqual(list(tarn.tarn_status_ALL), list(range(18)))

    def test_every_status_is_mirrored(self):
        values = re.findall(r"\b(TARN_\w+) = (\d+),", self.code)
        self.assertEqual(len(values), 18)
        self.assertEqual(len(tarn.Status), 18)
        self.assertIn(("TARN_TOO_OLD", "17"), values)
        for name, value in values:
            with self.subTest(name=name):
                short = name[len("TARN_"):]
                self.assertEqual(tarn.Status[short], int(value))
                self.assertEqual(getattr(tarn, short), int(value))
                self.assertEqual(getattr(tarn, name), int(value))
                self.assertEqual(tarn.status_name(int(value)), name)
        self.assertEqual(tarn.status_name(17), "TARN_TOO_OLD")
        self.assertEqual(tarn.status_name(18), "TARN_UNKNOWN_STATUS")
        self.assertEqual(tarn.status_name(-1), "TARN_UNKNOWN_STATUS")
        self.assertEqual(tarn.status_name(1 << 40), "TARN_UNKNOWN_STATUS")

    def test_struct_layouts(self):
        import ctypes

        p = ctypes.sizeof(ctypes.c_void_p)
        z = ctypes.sizeof(ctypes.c_size_t)
        self.assertEqual(ctypes.sizeof(tarn.tarn_buf), 3 * p)
        self.assertEqual(tarn.tarn_buf.len.offset, p)
        self.assertEqual(ctypes.sizeof(tarn.tarn_doc_info), 24)
        # ABI 2: the change metadata, embedded as `meta` in the three option structs.
        meta = tarn.tarn_change_meta
        self.assertEqual(meta.request_id.offset, 8)
        self.assertEqual(meta.user_data.offset, 8 + p)
        self.assertEqual(meta.user_data_len.offset, 8 + 2 * p)
        self.assertEqual(ctypes.sizeof(meta), 8 + 2 * p + z)
        self.assertEqual(ctypes.alignment(meta), 8)
        self.assertEqual(ctypes.sizeof(tarn.tarn_write_options), 24 + ctypes.sizeof(meta))
        self.assertEqual(tarn.tarn_write_options.ttl_ms.offset, 8)
        self.assertEqual(tarn.tarn_write_options.if_version.offset, 16)
        self.assertEqual(tarn.tarn_write_options.meta.offset, 24)
        for opts in (tarn.tarn_patch_options, tarn.tarn_remove_options):
            with self.subTest(opts=opts.__name__):
                self.assertEqual(ctypes.sizeof(opts), 16 + ctypes.sizeof(meta))
                self.assertEqual(opts.if_version.offset, 8)
                self.assertEqual(opts.meta.offset, 16)
        lo = tarn.tarn_listen_options
        self.assertEqual((lo.capacity.offset, lo.block_timeout_ms.offset, lo.from_version.offset),
                         (8, 8 + z, 16 + z))
        self.assertEqual(ctypes.sizeof(lo), 24 + z)
        self.assertEqual(ctypes.sizeof(tarn.tarn_listener_stats), 24)
        self.assertEqual(tarn.tarn_listener_stats.missed.offset, 8)
        self.assertEqual(tarn.tarn_listener_stats.panics.offset, 16)

    def header_structs(self):
        """name -> [(C type, field name)] for every struct the header defines."""
        out = {}
        for name, body in re.findall(r"typedef struct (tarn_\w+) \{(.*?)\} \1;", self.code, re.S):
            fields = []
            for decl in body.split(";"):
                decl = " ".join(decl.split())
                if decl:
                    ctype, field = decl.rsplit(" ", 1)
                    while field.startswith("*"):
                        ctype, field = ctype + " *", field[1:]
                    fields.append((ctype, field))
            out[name] = fields
        return out

    def test_structs_match_the_header(self):
        import ctypes

        structs = self.header_structs()
        self.assertEqual(
            set(structs),
            {"tarn_buf", "tarn_listen_options", "tarn_listener_stats", "tarn_doc_info",
             "tarn_change_meta", "tarn_write_options", "tarn_patch_options",
             "tarn_remove_options"},
        )
        scalar = {
            "uint32_t": ctypes.c_uint32,
            "uint64_t": ctypes.c_uint64,
            "size_t": ctypes.c_size_t,
        }
        for name, fields in structs.items():
            with self.subTest(struct=name):
                cls = getattr(tarn, name)
                self.assertEqual([f for _, f in fields], [f for f, _t in cls._fields_])
                for (ctype, field), (_f, pytype) in zip(fields, cls._fields_):
                    if ctype.endswith("*"):
                        want = ctypes.sizeof(ctypes.c_void_p)
                    elif ctype.startswith("struct "):
                        nested = ctype.split()[1]
                        self.assertIs(pytype, getattr(tarn, nested))
                        want = ctypes.sizeof(getattr(tarn, nested))
                    else:
                        want = ctypes.sizeof(scalar[ctype])
                    self.assertEqual(ctypes.sizeof(pytype), want, f"{name}.{field}")
        # The callback type: void (*)(const uint8_t *, size_t, void *).
        self.assertRegex(
            self.code,
            r"typedef void \(\*tarn_event_fn\)\(const uint8_t \*event, size_t len, void \*user_data\);",
        )
        self.assertIs(tarn.tarn_event_fn._restype_, None)
        self.assertEqual(
            [ctypes.sizeof(t) for t in tarn.tarn_event_fn._argtypes_],
            [ctypes.sizeof(ctypes.c_void_p), ctypes.sizeof(ctypes.c_size_t), ctypes.sizeof(ctypes.c_void_p)],
        )

    def test_error_classes(self):
        self.assertEqual(set(ALL_ERROR_CLASSES), set(tarn.Status) - {tarn.Status.OK})
        for status, cls in ALL_ERROR_CLASSES.items():
            with self.subTest(cls=cls.__name__):
                self.assertTrue(issubclass(cls, tarn.Error))
                self.assertIs(tarn._ERRORS[status], cls)
                e = cls("boom")
                self.assertEqual(e.status, status)
                self.assertEqual(e.status_name, "TARN_" + status.name)
                self.assertEqual(e.message, "boom")
                self.assertEqual(str(e), f"TARN_{status.name}: boom")
        e = tarn.Error("odd", 99)
        self.assertEqual(e.status, 99)
        self.assertEqual(e.status_name, "TARN_UNKNOWN_STATUS")
        import pickle

        e2 = pickle.loads(pickle.dumps(tarn.NotFound("gone")))
        self.assertIs(type(e2), tarn.NotFound)
        self.assertEqual((e2.status, e2.message), (tarn.NOT_FOUND, "gone"))

    def _import_in_subprocess(self, env_changes):
        env = dict(os.environ)
        env.pop("TARN_LIB", None)
        env.update(env_changes)
        env["PYTHONPATH"] = os.path.dirname(tarn.__file__)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return subprocess.run(
            [sys.executable, "-c", "import tarn; print(tarn.library_path())"],
            env=env,
            capture_output=True,
            text=True,
            cwd="/",
        )

    def test_library_search_without_tarn_lib(self):
        here = os.path.dirname(os.path.abspath(tarn.__file__))
        has_build = any(
            os.path.isfile(os.path.join(d, "target", p, "libtarn.so"))
            for d in (here, os.path.dirname(here))
            for p in ("release", "debug")
        )
        if not has_build:
            self.skipTest("no target/*/libtarn.so next to tarn.py")
        r = self._import_in_subprocess({})
        self.assertEqual(r.returncode, 0, r.stderr)
        found = r.stdout.strip()
        self.assertRegex(found, r"target/(release|debug)/libtarn\.so$")
        cands = [
            os.path.join(ROOT, "target", p, "libtarn.so") for p in ("release", "debug")
        ]
        cands = [c for c in cands if os.path.isfile(c)]
        newest = max(cands, key=os.path.getmtime)
        self.assertEqual(os.path.getmtime(found), os.path.getmtime(newest))

    def test_missing_library_is_a_clear_import_error(self):
        r = self._import_in_subprocess({"TARN_LIB": "/nonexistent/libtarn.so"})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("ImportError", r.stderr)
        self.assertIn("TARN_LIB", r.stderr)


# ---------------------------------------------------------------------------------------
# Write and read.
# ---------------------------------------------------------------------------------------


class TestWriteRead(TarnCase):
    def test_write_read_round_trip(self):
        eng = self.engine()
        s = eng.store
        value = {"name": "Ada", "tags": ["x", "y"], "n": 1.5, "ok": True, "none": None}
        v = s.write("people", "ada", value)
        self.assertIsInstance(v, int)
        self.assertGreater(v, 0)
        d = s.read("people", "ada")
        self.assertIsInstance(d, tarn.Document)
        self.assertEqual(d.value, value)
        self.assertEqual(
            d.json, b'{"name":"Ada","tags":["x","y"],"n":1.5,"ok":true,"none":null}'
        )
        self.assertEqual(d.version, v)
        self.assertEqual(d.modified_ms, T0)
        self.assertIsNone(d.expires_ms)
        self.assertIn("version", repr(d))

    def test_scalars_and_unicode(self):
        s = self.engine().store
        for i, value in enumerate([0, -1, 2**63, "text", None, False, [], {}, "ünï🙂"]):
            with self.subTest(value=value):
                s.write("scalars", f"k{i}", value)
                self.assertEqual(s.read("scalars", f"k{i}").value, value)
        s.write("bücket", "ключ 🙂", {"é": "🙂"})
        d = s.read("bücket", "ключ 🙂")
        self.assertEqual(d.value, {"é": "🙂"})
        self.assertEqual(d.json, '{"é":"🙂"}'.encode("utf-8"))
        self.assertIn("bücket", s.buckets())
        self.assertEqual(s.list("bücket"), ["ключ 🙂"])

    def test_write_json_stores_bytes_as_given(self):
        s = self.engine().store
        raw = b'{ "b" : 1 ,\n  "a" : [ 1 , 2 ] }'
        v = s.write_json("raw", "k", raw)
        d = s.read("raw", "k")
        self.assertEqual(d.json, raw)
        self.assertEqual(d.value, {"b": 1, "a": [1, 2]})
        self.assertEqual(d.version, v)
        s.write_json("raw", "s", '  "a str"  ')
        self.assertEqual(s.read("raw", "s").json, b'  "a str"  ')
        s.write_json("raw", "m", memoryview(b"[1]"))
        self.assertEqual(s.read("raw", "m").json, b"[1]")

    def test_bytes_names(self):
        s = self.engine().store
        s.write(b"bb", b"kk", 1)
        self.assertEqual(s.read("bb", "kk").value, 1)
        self.assertEqual(s.read(b"bb", b"kk").value, 1)
        self.assertEqual(s.get(b"bb", "kk"), 1)

    def test_get(self):
        s = self.engine().store
        self.assertIsNone(s.get("g", "missing"))
        self.assertEqual(s.get("g", "missing", default=7), 7)
        s.write("g", "k", {"a": 1})
        self.assertEqual(s.get("g", "k", default=7), {"a": 1})

    def test_versions_increase_on_each_change(self):
        eng = self.engine()
        s = eng.store
        self.assertEqual(s.last_version(), 0)
        seen = []
        seen.append(s.write("v", "k", 1))
        seen.append(s.write("v", "k", 2))
        seen.append(s.write("v", "other", 1))
        seen.append(s.patch("v", "k", [{"op": "replace", "path": "", "value": 3}]).version)
        seen.append(s.remove("v", "k"))
        seen.append(s.write("v", "k", 4))
        self.assertEqual(seen, sorted(set(seen)), "versions strictly increase")
        self.assertEqual(seen, list(range(1, 7)))
        self.assertEqual(s.last_version(), seen[-1])
        self.assertEqual(s.read("v", "k").version, seen[-1])
        self.assertEqual(s.read("v", "other").version, seen[2])
        # Reads do not change versions.
        s.read("v", "k")
        s.read_all("v")
        s.list("v")
        self.assertEqual(s.last_version(), seen[-1])

    def test_remove(self):
        s = self.engine().store
        v1 = s.write("r", "k", {"a": 1})
        v2 = s.remove("r", "k")
        self.assertGreater(v2, v1)
        self.assertEqual(s.last_version(), v2)
        self.assertTarnError(tarn.NotFound, s.read, "r", "k")
        self.assertEqual(s.list("r"), [])
        self.assertTarnError(tarn.NotFound, s.remove, "r", "k")

    def test_nul_in_names_is_refused_before_c(self):
        eng = self.seeded()
        s = eng.store
        for bucket, key in [("a\0b", "k"), ("seed", "a\0"), (b"seed\0", b"k"), ("seed", b"\0")]:
            with self.subTest(bucket=bucket, key=key):
                e = self.assertFails(eng, tarn.InvalidArgument, s.write, bucket, key, 1)
                self.assertIn("NUL", e.message)
                self.assertFails(eng, tarn.InvalidArgument, s.read, bucket, key)
                self.assertFails(eng, tarn.InvalidArgument, s.remove, bucket, key)
                self.assertFails(eng, tarn.InvalidArgument, s.patch, bucket, key, [])
        # "seed\0x" would be truncated by C to "seed"/"a": it must not touch seed/a.
        self.assertFails(eng, tarn.InvalidArgument, s.write, "seed", "a\0x", 1)
        self.assertFails(eng, tarn.InvalidArgument, s.read_all, "seed\0x")
        self.assertFails(eng, tarn.InvalidArgument, s.list, "seed\0x")

    def test_argument_types(self):
        eng = self.seeded()
        s = eng.store
        with self.unchanged(eng):
            self.assertRaises(TypeError, s.write, 1, "k", 1)
            self.assertRaises(TypeError, s.write, "b", None, 1)
            self.assertRaises(TypeError, s.write_json, "b", "k", 1)
            self.assertRaises(TypeError, s.write, "b", "k", object())
            self.assertRaises(ValueError, s.write, "b", "k", float("nan"))
            self.assertRaises(TypeError, s.write, "b", "k", 1, if_version="1")
            self.assertRaises(TypeError, s.write, "b", "k", 1, ttl_ms=1.5)
            self.assertTarnError(tarn.InvalidArgument, s.write, "b", "k", 1, if_version=-1)
            self.assertTarnError(tarn.InvalidArgument, s.write, "b", "k", 1, if_version=2**64)
            self.assertTarnError(tarn.InvalidArgument, s.remove, "seed", "a", if_version=-1)
            self.assertTarnError(tarn.InvalidArgument, s.patch, "seed", "a", [], if_version=-1)


# ---------------------------------------------------------------------------------------
# Conditional writes.
# ---------------------------------------------------------------------------------------


class TestConditional(TarnCase):
    def test_write_if_version(self):
        eng = self.engine()
        s = eng.store
        v1 = s.write("c", "k", 1, if_version=0)  # 0: only if absent
        self.assertEqual(s.read("c", "k").value, 1)
        self.assertFails(eng, tarn.VersionConflict, s.write, "c", "k", 2, if_version=0)
        e = self.assertFails(eng, tarn.VersionConflict, s.write, "c", "k", 2, if_version=v1 + 100)
        self.assertIn(str(v1), e.message)
        v2 = s.write("c", "k", 2, if_version=v1)
        self.assertGreater(v2, v1)
        self.assertEqual(s.read("c", "k").value, 2)
        self.assertFails(eng, tarn.VersionConflict, s.write, "c", "k", 3, if_version=v1)
        # After a removal the key is absent again: if_version=0 works.
        s.remove("c", "k")
        self.assertFails(eng, tarn.VersionConflict, s.write, "c", "k", 3, if_version=v2)
        s.write("c", "k", 3, if_version=0)
        self.assertEqual(s.read("c", "k").value, 3)

    def test_patch_if_version(self):
        eng = self.engine()
        s = eng.store
        v1 = s.write("c", "p", {"n": 1})
        op = [{"op": "replace", "path": "/n", "value": 2}]
        self.assertFails(eng, tarn.VersionConflict, s.patch, "c", "p", op, if_version=v1 + 1)
        self.assertFails(eng, tarn.VersionConflict, s.patch, "c", "p", op, if_version=0)
        p = s.patch("c", "p", op, if_version=v1)
        self.assertGreater(p.version, v1)
        self.assertEqual(s.read("c", "p").value, {"n": 2})
        self.assertFails(eng, tarn.VersionConflict, s.patch, "c", "p", op, if_version=v1)
        # Absent key: not found, whatever if_version says.
        self.assertFails(eng, tarn.NotFound, s.patch, "c", "absent", op, if_version=0)

    def test_remove_if_version(self):
        eng = self.engine()
        s = eng.store
        v1 = s.write("c", "r", 1)
        self.assertFails(eng, tarn.VersionConflict, s.remove, "c", "r", if_version=v1 + 1)
        self.assertFails(eng, tarn.VersionConflict, s.remove, "c", "r", if_version=0)
        v2 = s.remove("c", "r", if_version=v1)
        self.assertGreater(v2, v1)
        self.assertTarnError(tarn.NotFound, s.read, "c", "r")
        self.assertFails(eng, tarn.NotFound, s.remove, "c", "r", if_version=0)

    def test_fail_if_exists(self):
        eng = self.engine()
        s = eng.store
        v1 = s.write("x", "k", 1, fail_if_exists=True)
        e = self.assertFails(eng, tarn.Exists, s.write, "x", "k", 2, fail_if_exists=True)
        self.assertIn("x/k", e.message)
        self.assertFails(eng, tarn.Exists, s.write_json, "x", "k", b"2", fail_if_exists=True)
        self.assertEqual(s.read("x", "k").version, v1)
        s.write("x", "k", 2)  # without the flag it overwrites
        s.remove("x", "k")
        s.write("x", "k", 3, fail_if_exists=True)
        self.assertEqual(s.read("x", "k").value, 3)

    def test_exactly_one_fail_if_exists_writer_wins(self):
        eng = self.engine(workers=4)
        s = eng.store
        n = 16
        for round_ in range(20):
            key = f"race-{round_}"
            barrier = threading.Barrier(n)
            results = [None] * n

            def racer(i):
                barrier.wait()
                try:
                    results[i] = ("ok", s.write("race", key, {"winner": i}, fail_if_exists=True))
                except tarn.Exists as e:
                    results[i] = ("exists", e.message)
                except BaseException as e:  # pragma: no cover - reported below
                    results[i] = ("error", repr(e))

            threads = [threading.Thread(target=racer, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            winners = [i for i, r in enumerate(results) if r[0] == "ok"]
            self.assertEqual(len(winners), 1, results)
            self.assertEqual(sum(r[0] == "exists" for r in results), n - 1, results)
            self.assertTrue(all(r[1] for r in results))
            d = s.read("race", key)
            self.assertEqual(d.value, {"winner": winners[0]})
            self.assertEqual(d.version, results[winners[0]][1])

    def test_exactly_one_if_version_writer_wins(self):
        eng = self.engine(workers=4)
        s = eng.store
        n = 12
        for round_ in range(10):
            v0 = s.write("cas", "k", {"round": round_})
            barrier = threading.Barrier(n)
            results = [None] * n

            def racer(i):
                barrier.wait()
                try:
                    results[i] = ("ok", s.write("cas", "k", {"by": i}, if_version=v0))
                except tarn.VersionConflict:
                    results[i] = ("conflict", None)
                except BaseException as e:  # pragma: no cover
                    results[i] = ("error", repr(e))

            threads = [threading.Thread(target=racer, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            winners = [i for i, r in enumerate(results) if r[0] == "ok"]
            self.assertEqual(len(winners), 1, results)
            self.assertEqual(s.read("cas", "k").value, {"by": winners[0]})


# ---------------------------------------------------------------------------------------
# TTL with the manual clock.
# ---------------------------------------------------------------------------------------


class TestTTL(TarnCase):
    def test_ttl_expiry(self):
        eng = self.engine()
        s = eng.store
        s.write("t", "keep", {"k": 1})
        v = s.write("t", "k", {"x": 1}, ttl_ms=1000)
        d = s.read("t", "k")
        self.assertEqual(d.expires_ms, T0 + 1000)
        self.assertEqual(d.modified_ms, T0)
        self.assertEqual(d.version, v)
        entries = {e["key"]: e for e in s.read_all("t")}
        self.assertEqual(entries["k"]["expires_ms"], T0 + 1000)
        self.assertIsNone(entries["keep"]["expires_ms"])
        self.assertEqual(eng.clock.advance(999), T0 + 999)
        self.assertEqual(s.read("t", "k").value, {"x": 1})
        eng.settle()
        self.assertEqual(s.list("t"), ["k", "keep"])
        self.assertEqual(eng.clock.advance(1), T0 + 1000)
        # Gone at once for reads, before the sweeper has run.
        self.assertTarnError(tarn.NotFound, s.read, "t", "k")
        self.assertIsNone(s.get("t", "k"))
        eng.settle()
        self.assertEqual(s.list("t"), ["keep"])
        self.assertEqual([e["key"] for e in s.read_all("t")], ["keep"])
        self.assertTarnError(tarn.NotFound, s.read, "t", "k")
        self.assertTarnError(tarn.NotFound, s.remove, "t", "k")
        self.assertTarnError(tarn.NotFound, s.patch, "t", "k", [])
        # An expired key counts as absent.
        s.write("t", "k", 2, fail_if_exists=True)
        self.assertEqual(s.read("t", "k").value, 2)
        self.assertIsNone(s.read("t", "k").expires_ms)

    def test_bucket_disappears_when_its_last_document_expires(self):
        eng = self.engine()
        s = eng.store
        s.write("only", "k", 1, ttl_ms=10)
        s.write("stay", "k", 1)
        self.assertEqual(s.buckets(), ["only", "stay"])
        eng.clock.set(T0 + 10)
        eng.settle()
        self.assertEqual(s.buckets(), ["stay"])
        self.assertEqual(s.read_all("only"), [])
        self.assertEqual(s.list("only", keys_only=False), [])

    def test_rewrite_moves_or_clears_the_ttl(self):
        eng = self.engine()
        s = eng.store
        s.write("t", "k", 1, ttl_ms=100)
        s.write("t", "k", 2, ttl_ms=1000)  # a later deadline replaces the earlier one
        self.assertEqual(s.read("t", "k").expires_ms, T0 + 1000)
        eng.clock.advance(100)
        eng.settle()
        self.assertEqual(s.read("t", "k").value, 2)
        s.write("t", "k", 3)  # a write without a TTL makes it permanent
        self.assertIsNone(s.read("t", "k").expires_ms)
        eng.clock.advance(10_000)
        eng.settle()
        self.assertEqual(s.read("t", "k").value, 3)

    def test_patch_keeps_the_ttl(self):
        eng = self.engine()
        s = eng.store
        s.write("t", "p", {"n": 1}, ttl_ms=500)
        eng.clock.advance(100)
        p = s.patch("t", "p", [{"op": "replace", "path": "/n", "value": 2}])
        d = s.read("t", "p")
        self.assertEqual(d.version, p.version)
        self.assertEqual(d.expires_ms, T0 + 500)
        self.assertEqual(d.modified_ms, T0 + 100)
        eng.clock.advance(400)
        self.assertTarnError(tarn.NotFound, s.read, "t", "p")
        eng.settle()
        self.assertEqual(s.list("t"), [])

    def test_ttl_bounds(self):
        eng = self.engine()
        s = eng.store
        with self.unchanged(eng):
            self.assertTarnError(tarn.InvalidArgument, s.write, "t", "k", 1, ttl_ms=0)
            self.assertTarnError(tarn.InvalidArgument, s.write, "t", "k", 1, ttl_ms=-5)
            self.assertTarnError(tarn.InvalidArgument, s.write, "t", "k", 1, ttl_ms=2**64)
        s.write("t", "far", 1, ttl_ms=U64_MAX)
        self.assertEqual(s.read("t", "far").expires_ms, U64_MAX)
        s.write("t", "one", 1, ttl_ms=1)
        self.assertEqual(s.read("t", "one").expires_ms, T0 + 1)

    def test_many_ttls_expire_in_one_settle(self):
        eng = self.engine()
        s = eng.store
        for i in range(300):
            s.write("many", f"k{i:03}", i, ttl_ms=1 + i % 7)
        s.write("many", "keep", 1)
        eng.clock.advance(7)
        eng.settle()
        self.assertEqual(s.list("many"), ["keep"])


# ---------------------------------------------------------------------------------------
# Patch.
# ---------------------------------------------------------------------------------------


class TestPatch(TarnCase):
    def test_patch_operations(self):
        eng = self.engine()
        s = eng.store
        v = s.write("p", "k", {"a": 1, "b": [1, 2], "c": {"d": "x"}})
        ops = [
            {"op": "test", "path": "/a", "value": 1},
            {"op": "add", "path": "/b/-", "value": 3},
            {"op": "replace", "path": "/a", "value": 10},
            {"op": "remove", "path": "/c/d"},
            {"op": "copy", "from": "/b", "path": "/b2"},
            {"op": "move", "from": "/b2", "path": "/moved"},
        ]
        p = s.patch("p", "k", ops)
        self.assertIsInstance(p, tarn.Patched)
        self.assertGreater(p.version, v)
        want = {"a": 10, "b": [1, 2, 3], "c": {}, "moved": [1, 2, 3]}
        self.assertEqual(p.value, want)
        d = s.read("p", "k")
        self.assertEqual(d.json, p.json)
        self.assertEqual(d.value, want)
        self.assertEqual(d.version, p.version)
        self.assertEqual(s.last_version(), p.version)

    def test_patch_raw_ops(self):
        s = self.engine().store
        s.write("p", "k", {"a": 1})
        p = s.patch("p", "k", b'[{"op":"add","path":"/b","value":2}]')
        self.assertEqual(p.value, {"a": 1, "b": 2})
        p = s.patch("p", "k", '[{"op":"remove","path":"/a"}]')
        self.assertEqual(p.value, {"b": 2})
        p = s.patch("p", "k", ({"op": "add", "path": "/t", "value": [1]},))
        self.assertEqual(p.value, {"b": 2, "t": [1]})

    def test_remove_data_from_reply(self):
        s = self.engine().store
        s.write("p", "k", {"a": 1})
        p = s.patch("p", "k", [{"op": "add", "path": "/b", "value": 2}], remove_data_from_reply=True)
        self.assertIsNone(p.json)
        self.assertIsNone(p.value)
        self.assertGreater(p.version, 0)
        d = s.read("p", "k")
        self.assertEqual(d.value, {"a": 1, "b": 2})
        self.assertEqual(d.version, p.version)
        self.assertIn("version", repr(p))

    def test_failing_patch_leaves_document_byte_identical(self):
        eng = self.engine(max_document_bytes=64)
        s = eng.store
        raw = b'{"z": 1,  "a": {"n": [1, 2, 3]},\n "s": "x"}'
        v = s.write_json("p", "k", raw)
        cases = [
            (tarn.InvalidPatch, b"{}"),
            (tarn.InvalidPatch, b'[{"op":"nope","path":"/a"}]'),
            (tarn.InvalidPatch, b"["),
            (tarn.InvalidPatch, b'[{"op":"add","path":"/q"}]'),
            (tarn.InvalidPatch, b'[{"op":"add","path":"no-slash","value":1}]'),
            (tarn.InvalidPatch, b'[{"op":"move","from":"/a","path":"/a/n/x"}]'),
            (tarn.PatchPathNotFound, [{"op": "remove", "path": "/missing"}]),
            (tarn.PatchPathNotFound, [{"op": "replace", "path": "/a/missing", "value": 1}]),
            (tarn.PatchPathNotFound, [{"op": "add", "path": "/x/y/z", "value": 1}]),
            (tarn.PatchPathNotFound, [{"op": "move", "from": "/nope", "path": "/y"}]),
            (tarn.PatchPathNotFound, [{"op": "copy", "from": "/nope", "path": "/y"}]),
            (tarn.PatchPathNotFound, [{"op": "remove", "path": "/a/n/9"}]),
            # All or nothing: the first operation succeeds, the second fails.
            (
                tarn.PatchPathNotFound,
                [{"op": "add", "path": "/new", "value": 1}, {"op": "remove", "path": "/gone"}],
            ),
            (tarn.PatchTestFailed, [{"op": "test", "path": "/z", "value": 2}]),
            (
                tarn.PatchTestFailed,
                [{"op": "replace", "path": "/z", "value": 5}, {"op": "test", "path": "/z", "value": 1}],
            ),
            (tarn.TooLarge, [{"op": "add", "path": "/big", "value": "x" * 100}]),
        ]
        for cls, ops in cases:
            with self.subTest(ops=ops):
                self.assertFails(eng, cls, s.patch, "p", "k", ops)
                d = s.read("p", "k")
                self.assertEqual(d.json, raw)
                self.assertEqual(d.version, v)
        self.assertFails(eng, tarn.VersionConflict, s.patch, "p", "k", [], if_version=v + 1)
        self.assertEqual(s.read("p", "k").json, raw)


# ---------------------------------------------------------------------------------------
# Listing.
# ---------------------------------------------------------------------------------------


class TestListing(TarnCase):
    def test_read_all_shape(self):
        eng = self.engine()
        s = eng.store
        self.assertEqual(s.read_all("empty"), [])
        v_b = s.write("l", "b", {"n": 2}, ttl_ms=50)
        v_a = s.write("l", "a", [1])
        eng.clock.advance(5)
        v_c = s.write_json("l", "c", b'"c"')
        s.write("l2", "z", 0)
        all_ = s.read_all("l")
        self.assertIsInstance(all_, list)
        self.assertEqual([e["key"] for e in all_], ["a", "b", "c"])
        for e in all_:
            self.assertEqual(set(e), {"key", "version", "modified_ms", "expires_ms", "value"})
        self.assertEqual(
            all_,
            [
                {"key": "a", "version": v_a, "modified_ms": T0, "expires_ms": None, "value": [1]},
                {"key": "b", "version": v_b, "modified_ms": T0, "expires_ms": T0 + 50, "value": {"n": 2}},
                {"key": "c", "version": v_c, "modified_ms": T0 + 5, "expires_ms": None, "value": "c"},
            ],
        )

    def test_list_shapes(self):
        s = self.engine().store
        self.assertEqual(s.list("empty"), [])
        self.assertEqual(s.list("empty", keys_only=False), [])
        for k in ["b", "a", "c", "ä", "B"]:
            s.write("l", k, {"k": k})
        keys = s.list("l")
        self.assertEqual(keys, sorted(["b", "a", "c", "ä", "B"]))  # byte order of UTF-8
        self.assertTrue(all(isinstance(k, str) for k in keys))
        full = s.list("l", keys_only=False)
        self.assertEqual(full, [{"key": k, "value": {"k": k}} for k in keys])

    def test_buckets(self):
        s = self.engine().store
        self.assertEqual(s.buckets(), [])
        for b in ["zeta", "alpha", "mid", "alpha"]:
            s.write(b, "k", 1)
        self.assertEqual(s.buckets(), ["alpha", "mid", "zeta"])
        s.remove("mid", "k")
        self.assertEqual(s.buckets(), ["alpha", "zeta"])

    def test_many_documents(self):
        s = self.engine().store
        for i in range(500):
            s.write("big", f"{i:04}", {"i": i})
        self.assertEqual(s.list("big"), [f"{i:04}" for i in range(500)])
        self.assertEqual([e["value"]["i"] for e in s.read_all("big")], list(range(500)))


# ---------------------------------------------------------------------------------------
# Clock and settle.
# ---------------------------------------------------------------------------------------


class TestClock(TarnCase):
    def test_manual_clock(self):
        eng = self.engine()
        c = eng.clock
        self.assertEqual(c.now(), T0)
        self.assertEqual(c.advance(5), T0 + 5)
        self.assertEqual(c.advance(0), T0 + 5)
        self.assertEqual(c.now(), T0 + 5)
        self.assertEqual(c.set(T0 + 100), T0 + 100)
        self.assertEqual(c.now(), T0 + 100)
        c.set(T0 + 100)  # same time: fine
        s = eng.store
        s.write("c", "k", 1)
        self.assertEqual(s.read("c", "k").modified_ms, T0 + 100)

    def test_clock_never_goes_backwards(self):
        eng = self.seeded()
        eng.clock.advance(10)
        e = self.assertFails(eng, tarn.InvalidArgument, eng.clock.set, T0)
        self.assertIn("backwards", e.message)
        self.assertEqual(eng.clock.now(), T0 + 10)
        self.assertTarnError(tarn.InvalidArgument, eng.clock.advance, -1)
        self.assertTarnError(tarn.InvalidArgument, eng.clock.set, -1)
        self.assertEqual(eng.clock.now(), T0 + 10)

    def test_manual_clock_zero_start(self):
        eng = self.engine(manual_clock=0)
        self.assertEqual(eng.clock.now(), 0)
        eng.store.write("z", "k", 1, ttl_ms=1)
        self.assertEqual(eng.store.read("z", "k").expires_ms, 1)

    def test_system_clock(self):
        eng = tarn.Engine()
        self.addCleanup(eng.free)
        now = eng.clock.now()
        self.assertLess(abs(now - time.time() * 1000), 60_000)
        self.assertGreaterEqual(eng.clock.now(), now)
        with self.unchanged(eng):
            self.assertTarnError(tarn.NotSupported, eng.clock.set, now + 1000)
            self.assertTarnError(tarn.NotSupported, eng.clock.advance, 1)
        eng.store.write("s", "k", {"sys": True})
        self.assertEqual(eng.store.read("s", "k").value, {"sys": True})
        eng.settle()

    def test_settle(self):
        eng = self.engine()
        eng.settle()
        eng.settle(timeout_ms=0)
        eng.settle(timeout_ms=None)
        eng.settle(timeout_ms=10_000)
        eng.store.write("s", "k", 1, ttl_ms=5)
        eng.clock.advance(5)
        eng.settle(timeout_ms=10_000)
        self.assertEqual(eng.store.list("s"), [])
        self.assertTarnError(tarn.InvalidArgument, eng.settle, -1)


# ---------------------------------------------------------------------------------------
# Engine lifecycle and the builder.
# ---------------------------------------------------------------------------------------


def every_operation(eng):
    """(name, callable) for every Engine/Store/Clock method."""
    s = eng.store
    c = eng.clock
    return [
        ("write", lambda: s.write("b", "k", 1)),
        ("write_json", lambda: s.write_json("b", "k", b"1")),
        ("read", lambda: s.read("b", "k")),
        ("get", lambda: s.get("b", "k")),
        ("read_all", lambda: s.read_all("b")),
        ("list", lambda: s.list("b")),
        ("list_full", lambda: s.list("b", keys_only=False)),
        ("buckets", lambda: s.buckets()),
        ("patch", lambda: s.patch("b", "k", [])),
        ("remove", lambda: s.remove("b", "k")),
        ("settle", lambda: eng.settle()),
        ("clock.set", lambda: c.set(T0 + 1)),
        ("clock.advance", lambda: c.advance(1)),
        ("last_version", lambda: s.last_version()),
        ("clock.now", lambda: c.now()),
        ("bus.subscribe", lambda: eng.bus.subscribe("b", "*")),
        ("bus.listen", lambda: eng.bus.listen("b", "*", lambda e: None)),
        ("bus.signal", lambda: eng.bus.signal("b", "k", 1)),
        ("bus.signal_json", lambda: eng.bus.signal_json("b", "k", b"1")),
        ("open_session", lambda: eng.open_session("client")),
    ]


class TestLifecycle(TarnCase):
    def test_default_engine(self):
        with tarn.Engine() as eng:
            self.assertFalse(eng.closed)
            eng.store.write("d", "k", 1)
            self.assertEqual(eng.store.get("d", "k"), 1)
            self.assertIn("open", repr(eng))
        self.assertTrue(eng.closed)
        self.assertIn("freed", repr(eng))
        self.assertTarnError(tarn.Closed, eng.store.read, "d", "k")

    def test_all_builder_settings(self):
        eng = self.engine(
            manual_clock=5,
            workers=1,
            queue_capacity=1,
            max_bucket_bytes=4,
            max_key_bytes=4,
            max_document_bytes=8,
            store_capacity_bytes=1000,
            change_log_capacity=2,
        )
        s = eng.store
        self.assertEqual(eng.clock.now(), 5)
        for i in range(3):
            s.write("log", "k", i)
        self.assertTarnError(tarn.TooOld, eng.bus.subscribe, "log", "*", from_version=0)
        eng.bus.subscribe("log", "*", from_version=1).close()
        s.write("abcd", "wxyz", "123456")  # every bound exactly met
        self.assertTarnError(tarn.TooLarge, s.write, "abcde", "k", 1)
        self.assertTarnError(tarn.TooLarge, s.write, "b", "vwxyz", 1)
        self.assertTarnError(tarn.TooLarge, s.write, "b", "k", "1234567")

    def test_close_then_every_operation_is_closed(self):
        eng = self.seeded()
        eng.close()
        self.assertTrue(eng.closed)
        for name, op in every_operation(eng):
            with self.subTest(op=name):
                e = self.assertTarnError(tarn.Closed, op)
                self.assertIn("closed", e.message)
        eng.close()  # twice: harmless
        eng.close()
        eng.free()

    def test_free_then_every_operation_is_closed(self):
        eng = self.seeded()
        store, clock = eng.store, eng.clock  # taken before the free
        doc = store.read("seed", "a")
        eng.free()
        self.assertTrue(eng.closed)
        self.assertIsNone(eng._handle)
        for name, op in every_operation(eng) + [("close", eng.close)]:
            with self.subTest(op=name):
                self.assertTarnError(tarn.Closed, op)
        self.assertTarnError(tarn.Closed, store.write, "b", "k", 1)
        self.assertTarnError(tarn.Closed, clock.now)
        eng.free()  # twice: harmless
        with eng:
            pass  # __exit__ frees again: harmless
        # Bytes copied out before the free stay valid.
        self.assertEqual(doc.json, b'{"z": 1,  "a": [1, 2, 3] }')

    def test_close_then_free(self):
        eng = tarn.Engine(manual_clock=0)
        eng.close()
        eng.free()
        self.assertTarnError(tarn.Closed, eng.store.buckets)

    def test_context_manager_frees(self):
        with tarn.Engine(manual_clock=0) as eng:
            eng.store.write("cm", "k", 1)
        self.assertTarnError(tarn.Closed, eng.store.read, "cm", "k")
        # An exception inside the block propagates and still frees.
        with self.assertRaises(KeyError):
            with tarn.Engine(manual_clock=0) as eng2:
                raise KeyError("x")
        self.assertTarnError(tarn.Closed, eng2.settle)

    def test_garbage_collection_frees(self):
        for _ in range(20):
            eng = tarn.Engine(manual_clock=0, workers=1)
            eng.store.write("gc", "k", 1)
            del eng
        gc.collect()
        # A store keeps its engine alive.
        store = tarn.Engine(manual_clock=0, workers=1).store
        store.write("gc", "k", 2)
        self.assertEqual(store.get("gc", "k"), 2)
        del store
        gc.collect()

    def test_builder_bad_values(self):
        for kw in [
            {"workers": 0},
            {"workers": 257},
            {"queue_capacity": 0},
            {"max_bucket_bytes": 0},
            {"max_key_bytes": 0},
            {"max_document_bytes": 0},
        ]:
            with self.subTest(**kw):
                e = self.assertTarnError(tarn.InvalidArgument, tarn.Engine, **kw)
                self.assertTrue(e.message)
        # Refused in Python: C would wrap these around.
        for kw in [
            {"workers": -1},
            {"workers": 2**32 + 1},
            {"manual_clock": -1},
            {"queue_capacity": -1},
            {"store_capacity_bytes": 2**64},
            {"change_log_capacity": -1},
        ]:
            with self.subTest(**kw):
                self.assertTarnError(tarn.InvalidArgument, tarn.Engine, **kw)
        self.assertRaises(TypeError, tarn.Engine, workers="2")
        self.assertRaises(TypeError, tarn.Engine, workers=2.0)
        self.assertRaises(TypeError, tarn.Engine, manual_clock=True)
        # Bounds that are fine.
        for kw in [{"workers": 1}, {"workers": 256}, {"store_capacity_bytes": 0}, {"change_log_capacity": 0}]:
            with self.subTest(**kw):
                with tarn.Engine(manual_clock=0, **kw) as eng:
                    eng.store.buckets()

    def test_many_threads_one_engine(self):
        eng = self.engine(workers=4)
        s = eng.store
        n, per = 8, 150
        barrier = threading.Barrier(n)
        versions = [[] for _ in range(n)]
        errors = []

        def worker(i):
            try:
                barrier.wait()
                for j in range(per):
                    versions[i].append(s.write(f"mt{i % 3}", f"t{i}-{j}", {"i": i, "j": j}))
                    self.assertEqual(s.read(f"mt{i % 3}", f"t{i}-{j}").value, {"i": i, "j": j})
                    # Errors on many threads at once: each thread sees its own message.
                    try:
                        s.read(f"mt{i % 3}", f"missing-{i}-{j}")
                    except tarn.NotFound as e:
                        if f"missing-{i}-{j}" not in e.message:
                            errors.append(e.message)
                    else:
                        errors.append("no NotFound")
            except BaseException as e:  # pragma: no cover
                errors.append(repr(e))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        flat = [v for vs in versions for v in vs]
        self.assertEqual(len(set(flat)), n * per, "versions are unique")
        self.assertEqual(s.last_version(), n * per)
        for vs in versions:
            self.assertEqual(vs, sorted(vs))
        self.assertEqual(sum(len(s.list(f"mt{k}")) for k in range(3)), n * per)

    def test_free_waits_for_calls_on_other_threads(self):
        # Threads keep calling while the main thread frees: every call either completes
        # or raises Closed; none crashes on a freed handle.
        eng = tarn.Engine(manual_clock=0, workers=2)
        s = eng.store
        n = 6
        barrier = threading.Barrier(n + 1)
        outcomes = [set() for _ in range(n)]

        def worker(i):
            barrier.wait()
            for j in range(2000):
                try:
                    s.write("f", f"{i}-{j % 10}", j)
                    s.get("f", f"{i}-{j % 10}")
                    outcomes[i].add("ok")
                except tarn.Closed:
                    outcomes[i].add("closed")
                    if j > 50:
                        break

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        barrier.wait()
        eng.free()
        for t in threads:
            t.join()
        for o in outcomes:
            self.assertTrue(o <= {"ok", "closed"})
        self.assertTarnError(tarn.Closed, s.buckets)


# ---------------------------------------------------------------------------------------
# ABI 2 store arguments: who makes a change and why (session, request_id, user_data) and
# session-expiring writes. The events they produce are tested in test_bus.py.
# ---------------------------------------------------------------------------------------


class TestChangeMeta(TarnCase):
    def test_meta_does_not_change_what_is_stored(self):
        eng = self.engine()
        s = eng.store
        sess = eng.open_session("writer")
        meta = {"session": sess, "request_id": "r-1", "user_data": {"why": ["test"]}}
        v1 = s.write("m", "k", {"a": 1}, **meta)
        self.assertEqual(s.read("m", "k").json, b'{"a":1}')
        v2 = s.write_json("m", "raw", b' [1, 2] ', **meta)
        self.assertEqual(s.read("m", "raw").json, b" [1, 2] ")
        p = s.patch("m", "k", [{"op": "add", "path": "/b", "value": 2}], **meta)
        self.assertEqual(p.value, {"a": 1, "b": 2})
        v4 = s.remove("m", "raw", **meta)
        self.assertEqual([v1, v2, p.version, v4], [1, 2, 3, 4])
        # An int session id works like the Session object.
        s.write("m", "k2", 1, session=sess.id, request_id=b"bytes-id", user_data=None)
        s.patch("m", "k2", [], session=sess.id, remove_data_from_reply=True)
        s.remove("m", "k2", session=sess.id, if_version=s.read("m", "k2").version)
        self.assertEqual(s.list("m"), ["k"])
        self.assertEqual(s.read("m", "k").expires_ms, None)

    def test_expire_session_write(self):
        eng = self.engine()
        s = eng.store
        sess = eng.open_session("owner")
        s.write("es", "owned", 1, session=sess, expire_session=True, ttl_ms=60_000)
        s.write_json("es", "owned-json", b"2", session=sess, expire_session=True)
        s.write("es", "plain", 3, session=sess)
        s.write("es", "freed", 4, session=sess, expire_session=True)
        s.write("es", "freed", 5)  # a plain write makes it permanent
        s.patch("es", "owned-json", [{"op": "replace", "path": "", "value": 6}])  # still owned
        self.assertEqual(s.read("es", "owned").expires_ms, T0 + 60_000)
        sess.close()
        self.assertEqual(s.list("es", keys_only=False), [
            {"key": "freed", "value": 5},
            {"key": "plain", "value": 3},
        ])

    def test_meta_errors_leave_the_store_unchanged(self):
        eng = self.seeded(max_key_bytes=16, max_document_bytes=64)
        s = eng.store
        sess = eng.open_session("s")
        closed = eng.open_session("closed")
        closed.close()
        for name, fn in [("write", s.write), ("write_json", s.write_json)]:
            value = {"x": 1} if name == "write" else b'{"x":1}'
            with self.subTest(op=name):
                e = self.assertFails(eng, tarn.InvalidArgument, fn, "seed", "a", value, expire_session=True)
                self.assertIn("session", e.message)
                self.assertFails(eng, tarn.NotFound, fn, "seed", "a", value, session=closed, expire_session=True)
                self.assertFails(eng, tarn.NotFound, fn, "seed", "a", value, session=99, expire_session=True)
                self.assertFails(eng, tarn.TooLarge, fn, "seed", "a", value, request_id="r" * 17)
                self.assertFails(eng, tarn.TooLarge, fn, "seed", "a", value, user_data="u" * 64)
                self.assertFails(eng, tarn.InvalidArgument, fn, "seed", "a", value, request_id="a\0b")
                self.assertFails(eng, tarn.InvalidUtf8, fn, "seed", "a", value, request_id=b"\xff")
                self.assertFails(eng, tarn.InvalidUtf8, fn, "seed", "a", value, request_id="\ud800")
        ops = [{"op": "add", "path": "/n", "value": 1}]
        self.assertFails(eng, tarn.TooLarge, s.patch, "seed", "a", ops, session=sess, request_id="r" * 17)
        self.assertFails(eng, tarn.TooLarge, s.patch, "seed", "a", ops, user_data="u" * 64)
        self.assertFails(eng, tarn.InvalidUtf8, s.remove, "seed", "a", request_id=b"\xc3")
        self.assertFails(eng, tarn.TooLarge, s.remove, "seed", "a", request_id="r" * 17)
        with self.unchanged(eng):
            self.assertRaises(TypeError, s.write, "seed", "a", 1, request_id=1)
            self.assertRaises(TypeError, s.write, "seed", "a", 1, user_data=object())
            self.assertRaises(ValueError, s.remove, "seed", "a", user_data=float("inf"))
            self.assertRaises(TypeError, s.patch, "seed", "a", [], session=1.0)
            self.assertRaises(TypeError, s.write, "seed", "a", 1, session=True)
            self.assertTarnError(tarn.InvalidArgument, s.write, "seed", "a", 1, session=-1)
            self.assertTarnError(tarn.InvalidArgument, s.write, "seed", "a", 1, session=2**64)
        # At the bounds: fine.
        s.write("seed", "a", 1, request_id="r" * 16, user_data="u" * 62)

    def test_session_from_another_engine_is_refused(self):
        eng = self.seeded()
        other = self.engine()
        foreign = other.open_session("foreign")
        e = self.assertFails(eng, tarn.InvalidArgument, eng.store.write, "seed", "a", 1, session=foreign)
        self.assertIn("another engine", e.message)


# ---------------------------------------------------------------------------------------
# Every error status the store can give, each with a message and an unchanged store.
# ---------------------------------------------------------------------------------------


BAD_BUCKETS = ["", " x", "x ", "x.", ".x", "*", "$sys", "$", "a\tb", "a\x7fb", "a\x85b"]
BAD_KEYS = ["", "*", "a\nb", "x\x01", "\x85"]


class TestErrors(TarnCase):
    def test_not_found(self):
        eng = self.seeded()
        s = eng.store
        e = self.assertFails(eng, tarn.NotFound, s.read, "seed", "missing")
        self.assertIn("seed/missing", e.message)
        self.assertFails(eng, tarn.NotFound, s.read, "no-such-bucket", "a")
        self.assertFails(eng, tarn.NotFound, s.patch, "seed", "missing", [])
        self.assertFails(eng, tarn.NotFound, s.remove, "seed", "missing")
        self.assertFails(eng, tarn.NotFound, s.remove, "no-such-bucket", "a")

    def test_exists(self):
        eng = self.seeded()
        self.assertFails(eng, tarn.Exists, eng.store.write, "seed", "a", 1, fail_if_exists=True)

    def test_invalid_argument_bucket_names(self):
        eng = self.seeded()
        s = eng.store
        for bucket in BAD_BUCKETS:
            with self.subTest(bucket=bucket):
                e = self.assertFails(eng, tarn.InvalidArgument, s.write, bucket, "k", 1)
                self.assertIn("bucket", e.message)
                self.assertFails(eng, tarn.InvalidArgument, s.write_json, bucket, "k", b"1")
                self.assertFails(eng, tarn.InvalidArgument, s.read, bucket, "k")
                self.assertFails(eng, tarn.InvalidArgument, s.get, bucket, "k")
                self.assertFails(eng, tarn.InvalidArgument, s.patch, bucket, "k", [])
                self.assertFails(eng, tarn.InvalidArgument, s.remove, bucket, "k")
                self.assertFails(eng, tarn.InvalidArgument, s.read_all, bucket)
                self.assertFails(eng, tarn.InvalidArgument, s.list, bucket)
                self.assertFails(eng, tarn.InvalidArgument, s.list, bucket, keys_only=False)

    def test_invalid_argument_keys(self):
        eng = self.seeded()
        s = eng.store
        for key in BAD_KEYS:
            with self.subTest(key=key):
                e = self.assertFails(eng, tarn.InvalidArgument, s.write, "seed", key, 1)
                self.assertIn("key", e.message)
                self.assertFails(eng, tarn.InvalidArgument, s.read, "seed", key)
                self.assertFails(eng, tarn.InvalidArgument, s.patch, "seed", key, [])
                self.assertFails(eng, tarn.InvalidArgument, s.remove, "seed", key)

    def test_valid_unusual_names(self):
        s = self.engine().store
        for bucket, key in [("a.b", " k "), ("a$", "."), ("x y", "$k"), ("é", "a/b"), ("a*", "**")]:
            with self.subTest(bucket=bucket, key=key):
                s.write(bucket, key, 1)
                self.assertEqual(s.get(bucket, key), 1)

    def test_invalid_utf8(self):
        eng = self.seeded()
        s = eng.store
        for bucket, key in [(b"\xff", "k"), ("seed", b"\xff"), (b"ok\xc3", "k"), ("\ud800", "k"), ("seed", "x\udcff")]:
            with self.subTest(bucket=bucket, key=key):
                e = self.assertFails(eng, tarn.InvalidUtf8, s.write, bucket, key, 1)
                self.assertIn("UTF-8", e.message)
                self.assertFails(eng, tarn.InvalidUtf8, s.read, bucket, key)
                self.assertFails(eng, tarn.InvalidUtf8, s.patch, bucket, key, [])
                self.assertFails(eng, tarn.InvalidUtf8, s.remove, bucket, key)
        self.assertFails(eng, tarn.InvalidUtf8, s.read_all, b"\xff")
        self.assertFails(eng, tarn.InvalidUtf8, s.list, b"\xff")

    def test_invalid_json(self):
        eng = self.seeded()
        s = eng.store
        bad = [
            b"{",
            b"\xff",
            b"",
            b"   ",
            b"1 2",
            b"NaN",
            b'{"a":1,}',
            b"{'a':1}",
            b'"\\ud800"',  # lone surrogate escape
            b'"\xed\xa0\x80"',  # surrogate encoded as UTF-8 bytes
            b"[" * 200 + b"]" * 200,  # nesting too deep
            "\"\ud800\"",  # str with a lone surrogate: not UTF-8
        ]
        for text in bad:
            with self.subTest(text=text[:20]):
                self.assertFails(eng, tarn.InvalidJson, s.write_json, "seed", "a", text)
                self.assertFails(eng, tarn.InvalidJson, s.write_json, "seed", "new", text)
        self.assertFails(eng, tarn.InvalidJson, s.write, "seed", "a", "\ud800")

    def test_invalid_patch(self):
        eng = self.seeded()
        s = eng.store
        for ops in [b"{}", b'[{"op":"nope","path":"/a"}]', {}, b"", b"[", b'"x"', [1], [{"path": "/a"}]]:
            with self.subTest(ops=ops):
                self.assertFails(eng, tarn.InvalidPatch, s.patch, "seed", "a", ops)

    def test_patch_path_not_found(self):
        eng = self.seeded()
        e = self.assertFails(
            eng, tarn.PatchPathNotFound, eng.store.patch, "seed", "a", [{"op": "remove", "path": "/nope"}]
        )
        self.assertIn("/nope", e.message)

    def test_patch_test_failed(self):
        eng = self.seeded()
        self.assertFails(
            eng,
            tarn.PatchTestFailed,
            eng.store.patch,
            "seed",
            "a",
            [{"op": "test", "path": "/z", "value": 2}],
        )

    def test_version_conflict(self):
        eng = self.seeded()
        s = eng.store
        v = s.read("seed", "a").version
        self.assertFails(eng, tarn.VersionConflict, s.write, "seed", "a", 1, if_version=v + 1)
        self.assertFails(eng, tarn.VersionConflict, s.write, "seed", "a", 1, if_version=0)
        self.assertFails(eng, tarn.VersionConflict, s.write, "seed", "new", 1, if_version=v)
        self.assertFails(eng, tarn.VersionConflict, s.patch, "seed", "a", [], if_version=v + 1)
        self.assertFails(eng, tarn.VersionConflict, s.remove, "seed", "a", if_version=v + 1)

    def test_too_large(self):
        eng = self.seeded(max_document_bytes=32, max_key_bytes=8, max_bucket_bytes=8)
        s = eng.store
        e = self.assertFails(eng, tarn.TooLarge, s.write_json, "seed", "a", b'"' + b"x" * 31 + b'"')
        self.assertIn("32", e.message)
        self.assertFails(eng, tarn.TooLarge, s.write, "seed", "new", "x" * 31)
        self.assertFails(eng, tarn.TooLarge, s.write, "seed", "k" * 9, 1)
        self.assertFails(eng, tarn.TooLarge, s.read, "seed", "k" * 9)
        self.assertFails(eng, tarn.TooLarge, s.remove, "seed", "k" * 9)
        self.assertFails(eng, tarn.TooLarge, s.write, "b" * 9, "k", 1)
        self.assertFails(eng, tarn.TooLarge, s.read_all, "b" * 9)
        self.assertFails(
            eng, tarn.TooLarge, s.patch, "seed", "a", [{"op": "add", "path": "/p", "value": "x" * 32}]
        )
        # Exactly at the bounds: fine.
        s.write_json("b" * 8, "k" * 8, b'"' + b"x" * 30 + b'"')
        self.assertEqual(len(s.read("b" * 8, "k" * 8).json), 32)

    def test_full(self):
        eng = self.engine(store_capacity_bytes=20)
        s = eng.store
        s.write_json("f", "k1", b'"123456"')  # 2 + 8 = 10 bytes
        e = self.assertFails(eng, tarn.Full, s.write_json, "f", "k2", b'"1234567"')  # 11 more
        self.assertIn("20", e.message)
        self.assertFails(
            eng, tarn.Full, s.patch, "f", "k1", [{"op": "replace", "path": "", "value": "x" * 20}]
        )
        s.write_json("f", "k2", b'"123456"')  # exactly full: 20 bytes
        self.assertFails(eng, tarn.Full, s.write_json, "f", "k3", b"1")
        s.write_json("f", "k1", b"1")  # shrinking is always allowed: 3 + 10 bytes
        s.write_json("f", "k3", b"12345")  # 7 more: 20
        self.assertFails(eng, tarn.Full, s.write_json, "f", "k4", b"1")
        s.remove("f", "k2")  # frees 10
        s.write_json("f", "k4", b'"123456"')
        self.assertEqual(s.list("f"), ["k1", "k3", "k4"])

    def test_full_space_returns_after_expiry(self):
        eng = self.engine(store_capacity_bytes=10)
        s = eng.store
        s.write_json("f", "k1", b'"123456"', ttl_ms=5)
        self.assertFails(eng, tarn.Full, s.write_json, "f", "k2", b'"123456"')
        eng.clock.advance(5)
        eng.settle()
        s.write_json("f", "k2", b'"123456"')
        self.assertEqual(s.list("f"), ["k2"])

    def test_not_supported(self):
        eng = tarn.Engine()
        self.addCleanup(eng.free)
        eng.store.write("n", "k", 1)
        self.assertFails(eng, tarn.NotSupported, eng.clock.set, 0)
        self.assertFails(eng, tarn.NotSupported, eng.clock.advance, 0)

    def test_closed(self):
        eng = self.seeded()
        eng.close()
        e = self.assertTarnError(tarn.Closed, eng.store.write, "seed", "a", 1)
        self.assertIn("closed", e.message)
        self.assertTarnError(tarn.Closed, eng.store.read, "seed", "a")

    def test_message_is_read_right_after_the_failing_call(self):
        # Two different failures in a row: each exception carries its own message.
        eng = self.seeded()
        s = eng.store
        e1 = self.assertTarnError(tarn.NotFound, s.read, "seed", "first")
        e2 = self.assertTarnError(tarn.InvalidJson, s.write_json, "seed", "a", b"{")
        s.read("seed", "a")  # a success leaves the last error alone; messages are copies
        self.assertIn("first", e1.message)
        self.assertIn("JSON", e2.message)


def main():
    prog = unittest.main(exit=False, verbosity=2)
    result = prog.result
    if result.testsRun == 0:
        print("error: no tests ran", file=sys.stderr)
        return 1
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
