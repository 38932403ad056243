"""Tests of the event bus and sessions (C ABI version 2) through python/tarn.py.

Run from the repository root:

    TARN_LIB=target/debug/libtarn.so PYTHONPATH=python python3 ffi-tests/python/test_bus.py

Standard library only (unittest). Exits non-zero when a test fails or when no test ran.

Every behaviour is checked in both delivery styles — pull (``eng.bus.subscribe`` +
``Listener.next``) and callback (``eng.bus.listen``) — by the two TestCase classes built
from ``BusBehaviour``. Nothing here sleeps: time comes from the manual clock, background
work (TTL sweeps, leases, callbacks) is waited for with ``eng.settle()``, and threads meet
on ``threading`` primitives and ``queue.Queue.get(timeout=...)``.
"""

import contextlib
import ctypes
import gc
import os
import queue
import select
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# PYTHONPATH (python/) comes first; this is only a fallback for running by hand.
sys.path.append(os.path.join(ROOT, "python"))

import tarn  # noqa: E402


def _no_sleep(*_args, **_kwargs):
    raise AssertionError("time.sleep is banned in these tests")


time.sleep = _no_sleep

T0 = 1_700_000_000_000  # manual clock start, ms since the epoch
WAIT_S = 10  # the longest any test waits for another thread (never reached when passing)
WAIT_MS = WAIT_S * 1000

PULL = "pull"
CALLBACK = "callback"


class Sink:
    """One listener in either style, with one way to take what it received so far.

    Pull: ``take()`` drains the listener without waiting. Callback: the callback puts
    every event on a queue.Queue; ``take()`` settles the engine (callbacks run on engine
    workers; settle returns when none is queued or running) and empties the queue."""

    def __init__(self, eng, style, bucket, key, **options):
        self.eng = eng
        self.style = style
        self.events = queue.Queue()
        if style == PULL:
            self.listener = eng.bus.subscribe(bucket, key, **options)
        else:
            self.listener = eng.bus.listen(bucket, key, self.events.put, **options)

    def take(self):
        if self.style == PULL:
            return self.listener.drain()
        self.eng.settle(timeout_ms=WAIT_MS)
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def get(self):
        """The next event, waiting for it (at most WAIT_S)."""
        if self.style == PULL:
            e = self.listener.next(WAIT_MS)
            if e is None:
                raise AssertionError(f"no event within {WAIT_S} s")
            return e
        return self.events.get(timeout=WAIT_S)

    def stats(self):
        return self.listener.stats()


def where(events):
    return [(e.bucket, e.key) for e in events]


def kinds(events):
    return [e.kind for e in events]


class TarnBusCase(unittest.TestCase):
    def engine(self, **kw):
        kw.setdefault("manual_clock", T0)
        kw.setdefault("workers", 2)
        eng = tarn.Engine(**kw)
        self.addCleanup(eng.free)
        return eng

    def assertTarnError(self, cls, fn, *args, **kwargs):
        """fn(*args, **kwargs) raises exactly `cls`, with its status and a message."""
        with self.assertRaises(cls) as cm:
            fn(*args, **kwargs)
        e = cm.exception
        self.assertIs(type(e), cls)
        self.assertEqual(e.status, cls.STATUS)
        self.assertEqual(e.status_name, "TARN_" + tarn.Status(cls.STATUS).name)
        self.assertTrue(e.message.strip(), f"{cls.__name__} has an empty message")
        return e

    @contextlib.contextmanager
    def worker_held(self, eng):
        """Occupies an engine worker (the only one, with workers=1) with a callback that
        waits until the block ends, so callback deliveries queue up meanwhile."""
        started = threading.Event()
        release = threading.Event()

        def hold(_event):
            started.set()
            release.wait(WAIT_S)

        holder = eng.bus.listen("hold", "k", hold)
        eng.store.write("hold", "k", 1)
        self.assertTrue(started.wait(WAIT_S), "the holding callback did not start")
        try:
            yield
        finally:
            release.set()
            eng.settle(timeout_ms=WAIT_MS)
            holder.close()


class BusBehaviour:
    """Every bus and session behaviour; mixed into one TestCase per delivery style."""

    STYLE = None

    def sink(self, eng, bucket, key, **options):
        return Sink(eng, self.STYLE, bucket, key, **options)

    # -- patterns ------------------------------------------------------------------

    def test_wildcard_matrix(self):
        eng = self.engine()
        exact = self.sink(eng, "b1", "k1")
        bucket_wide = self.sink(eng, "b1", "*")
        key_wide = self.sink(eng, "*", "k1")
        everything = self.sink(eng, "*", "*")
        other = self.sink(eng, "b3", "*")
        writes = [("b1", "k1"), ("b1", "k2"), ("b2", "k1"), ("b2", "k2")]
        for b, k in writes:
            eng.store.write(b, k, 1)
        self.assertEqual(where(exact.take()), [("b1", "k1")])
        self.assertEqual(where(bucket_wide.take()), [("b1", "k1"), ("b1", "k2")])
        self.assertEqual(where(key_wide.take()), [("b1", "k1"), ("b2", "k1")])
        self.assertEqual(where(everything.take()), writes)
        self.assertEqual(other.take(), [])
        # Signals follow the same patterns.
        eng.bus.signal("b2", "k1")
        self.assertEqual(exact.take(), [])
        self.assertEqual(bucket_wide.take(), [])
        self.assertEqual(where(key_wide.take()), [("b2", "k1")])
        self.assertEqual(where(everything.take()), [("b2", "k1")])
        # A closed listener gets nothing more; the others keep going.
        exact.listener.close()
        eng.store.write("b1", "k1", 2)
        self.assertEqual(where(bucket_wide.take()), [("b1", "k1")])
        self.assertEqual(where(everything.take()), [("b1", "k1")])
        if self.STYLE == CALLBACK:
            self.assertEqual(exact.take(), [])

    def test_same_pattern_twice_gets_everything_twice(self):
        eng = self.engine()
        a = self.sink(eng, "b", "k")
        b = self.sink(eng, "b", "k")
        eng.store.write("b", "k", 1)
        eng.store.write("b", "k", 2)
        self.assertEqual(len(a.take()), 2)
        self.assertEqual(len(b.take()), 2)
        self.assertNotEqual(a.listener.id, b.listener.id)

    # -- what events carry ---------------------------------------------------------

    def test_values_on_and_off(self):
        eng = self.engine()
        s = eng.store
        with_values = self.sink(eng, "v", "*", send_values=True)
        without = self.sink(eng, "v", "*")
        s.write("v", "k", {"n": 1})
        s.patch("v", "k", [{"op": "replace", "path": "/n", "value": 2}])
        s.remove("v", "k")
        eng.bus.signal("v", "sig", {"text": "hi"})
        got = with_values.take()
        self.assertEqual(kinds(got), ["write", "patch", "remove", "signal"])
        self.assertEqual([e.value for e in got], [{"n": 1}, {"n": 2}, None, {"text": "hi"}])
        self.assertIn(b'"value":{"n":1}', got[0].json)
        plain = without.take()
        self.assertEqual(kinds(plain), ["write", "patch", "remove", "signal"])
        self.assertEqual([e.value for e in plain], [None] * 4)
        self.assertTrue(all(b'"value":null' in e.json for e in plain))
        # The patch operations come with or without values.
        ops = [{"op": "replace", "path": "/n", "value": 2}]
        self.assertEqual(got[1].ops, ops)
        self.assertEqual(plain[1].ops, ops)

    def test_change_events_write_patch_remove_expire(self):
        eng = self.engine()
        s = eng.store
        sink = self.sink(eng, "c", "*", send_values=True)
        v1 = s.write("c", "k", {"n": 1})
        eng.clock.advance(3)
        p = s.patch("c", "k", [{"op": "add", "path": "/m", "value": [1]}])
        v3 = s.remove("c", "k")
        v4 = s.write("c", "ttl", "soon", ttl_ms=5)
        eng.clock.advance(5)
        eng.settle()
        got = sink.take()
        self.assertEqual(kinds(got), ["write", "patch", "remove", "write", "expire"])
        w, pa, r, w2, x = got
        self.assertEqual((w.bucket, w.key, w.version, w.timestamp_ms), ("c", "k", v1, T0))
        self.assertEqual((pa.version, pa.timestamp_ms), (p.version, T0 + 3))
        self.assertEqual(pa.value, {"n": 1, "m": [1]})
        self.assertEqual(pa.ops, [{"op": "add", "path": "/m", "value": [1]}])
        self.assertEqual((r.version, r.value, r.ops), (v3, None, None))
        self.assertEqual((w2.key, w2.version, w2.value), ("ttl", v4, "soon"))
        self.assertEqual((x.key, x.timestamp_ms, x.value), ("ttl", T0 + 8, None))
        self.assertGreater(x.version, v4)
        self.assertEqual(x.version, s.last_version())
        versions = [e.version for e in got]
        self.assertEqual(versions, sorted(set(versions)))
        for e in got:
            self.assertTrue(e.is_change)
            self.assertIsNone(e.session)
            self.assertIsNone(e.request_id)
            self.assertIsNone(e.user_data)
            self.assertEqual(e.missed, 0)
        self.assertIn("tarn.Event", repr(got[0]))
        self.assertIsInstance(got[0].json, bytes)

    def test_request_id_and_user_data_pass_through(self):
        eng = self.engine()
        s = eng.store
        sink = self.sink(eng, "m", "*")
        s.write("m", "k", 1, request_id="req-1", user_data={"who": "test", "n": [1, 2]})
        s.patch("m", "k", [], request_id="req-2", user_data="text")
        s.write_json("m", "k", b"2", request_id="req-3")
        s.remove("m", "k", request_id="req-4", user_data=[None, True])
        s.write("m", "k", 3, user_data=0)
        s.write("m", "k", 4, request_id="ünï-🙂")
        got = sink.take()
        self.assertEqual(
            [(e.kind, e.request_id, e.user_data) for e in got],
            [
                ("write", "req-1", {"who": "test", "n": [1, 2]}),
                ("patch", "req-2", "text"),
                ("write", "req-3", None),
                ("remove", "req-4", [None, True]),
                ("write", None, 0),
                ("write", "ünï-🙂", None),
            ],
        )
        self.assertIn(b'"user_data":{"who":"test","n":[1,2]}', got[0].json)

    def test_signals_are_delivered_and_never_stored(self):
        eng = self.engine()
        sink = self.sink(eng, "chat", "*", send_values=True)
        eng.bus.signal("chat", "room1", {"text": "hi"})
        eng.bus.signal("chat", "room2")
        eng.bus.signal_json("chat", "room3", b' [1, "two"] ')
        eng.bus.signal_json("chat", "room4", "null")
        got = sink.take()
        self.assertEqual(kinds(got), ["signal"] * 4)
        self.assertEqual([e.key for e in got], ["room1", "room2", "room3", "room4"])
        self.assertEqual([e.value for e in got], [{"text": "hi"}, None, [1, "two"], None])
        for e in got:
            self.assertEqual((e.version, e.session, e.timestamp_ms), (0, None, T0))
            self.assertFalse(e.is_change)
        self.assertTarnError(tarn.NotFound, eng.store.read, "chat", "room1")
        self.assertEqual(eng.store.last_version(), 0)
        self.assertEqual(eng.store.buckets(), [])

    # -- order ---------------------------------------------------------------------

    def test_per_key_order_with_two_writer_threads(self):
        eng = self.engine(workers=4)
        sink = self.sink(eng, "order", "k")
        per = 200
        barrier = threading.Barrier(2)
        returned = [[], []]
        errors = []

        def writer(i):
            try:
                barrier.wait(WAIT_S)
                for j in range(per):
                    returned[i].append(eng.store.write("order", "k", {"w": i, "j": j}))
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT_S * 6)
        self.assertEqual(errors, [])
        got = sink.take()
        self.assertEqual(len(got), 2 * per)
        versions = [e.version for e in got]
        self.assertTrue(
            all(a < b for a, b in zip(versions, versions[1:])), "versions strictly increase"
        )
        self.assertEqual(set(versions), set(returned[0]) | set(returned[1]))
        self.assertEqual(sink.stats().missed, 0)

    # -- watching from a version ---------------------------------------------------

    def test_watch_from_a_version(self):
        eng = self.engine()
        s = eng.store
        v1 = s.write("w", "a", 1)
        v2 = s.write("w", "b", 2)
        s.write("elsewhere", "a", 0)
        v3 = s.patch("w", "a", []).version
        v4 = s.remove("w", "b")
        sink = self.sink(eng, "w", "*", from_version=v1, send_values=True)
        replayed = sink.take()
        self.assertEqual([e.version for e in replayed], [v2, v3, v4])
        self.assertEqual(kinds(replayed), ["write", "patch", "remove"])
        self.assertEqual(replayed[0].value, 2)
        v5 = s.write("w", "c", 5)
        s.write("elsewhere", "c", 5)
        self.assertEqual([e.version for e in sink.take()], [v5])
        # From the newest version: nothing replayed, live changes only.
        live = self.sink(eng, "w", "*", from_version=s.last_version())
        self.assertEqual(live.take(), [])
        v7 = s.write("w", "d", 1)
        self.assertEqual([e.version for e in live.take()], [v7])
        # From 0 while the log still has everything: every change of the pattern.
        full = self.sink(eng, "w", "*", from_version=0)
        self.assertEqual([e.version for e in full.take()], [v1, v2, v3, v4, v5, v7])

    def test_watch_from_a_version_too_old(self):
        eng = self.engine(change_log_capacity=4)
        s = eng.store
        versions = [s.write("old", f"k{i}", i) for i in range(10)]
        e = self.assertTarnError(
            tarn.TooOld, eng.bus.subscribe, "old", "*", from_version=1
        )
        self.assertIn("too old", e.message)
        self.assertTarnError(
            tarn.TooOld, eng.bus.listen, "old", "*", lambda _e: None, from_version=1
        )
        # The log keeps the last 4 changes: starting right before them works.
        self.assertTarnError(
            tarn.TooOld, eng.bus.subscribe, "old", "*", from_version=versions[-6]
        )
        sink = self.sink(eng, "old", "*", from_version=versions[-5])
        self.assertEqual([e.version for e in sink.take()], versions[-4:])
        self.assertEqual(eng.listeners(), [sink.listener], "a refused listener is not kept")

    def test_change_log_capacity_zero_keeps_nothing(self):
        eng = self.engine(change_log_capacity=0)
        v = eng.store.write("z", "k", 1)
        self.assertTarnError(tarn.TooOld, eng.bus.subscribe, "z", "*", from_version=v - 1)
        sink = self.sink(eng, "z", "*", from_version=v)
        self.assertEqual(sink.take(), [])
        v2 = eng.store.write("z", "k", 2)
        self.assertEqual([e.version for e in sink.take()], [v2])

    # -- sessions ------------------------------------------------------------------

    def test_session_close_removes_its_keys_with_session_expire_events(self):
        eng = self.engine()
        s = eng.store
        sink = self.sink(eng, "pres", "*")
        alice = eng.open_session("alice")
        va = s.write("pres", "alice", {"here": True}, session=alice, expire_session=True)
        vb = s.write("pres", "alice-2", 1, session=alice.id, expire_session=True)
        s.write("pres", "plain", 1, session=alice)  # not session-expiring
        self.assertEqual(s.list("pres"), ["alice", "alice-2", "plain"])
        self.assertEqual([e.session for e in sink.take()], [alice.id] * 3)
        alice.close()
        self.assertEqual(s.list("pres"), ["plain"])
        got = sink.take()
        self.assertEqual(kinds(got), ["session_expire", "session_expire"])
        self.assertEqual(sorted(e.key for e in got), ["alice", "alice-2"])
        for e in got:
            self.assertEqual(e.session, alice.id)
            self.assertGreater(e.version, max(va, vb))
            self.assertIsNone(e.value)
        alice.close()  # twice: harmless
        self.assertFalse(alice.is_open())

    def test_key_belongs_to_the_session_that_last_wrote_it(self):
        eng = self.engine()
        s = eng.store
        sink = self.sink(eng, "own", "*")
        a = eng.open_session("a")
        b = eng.open_session("b")
        s.write("own", "x", 1, session=a, expire_session=True)
        s.write("own", "x", 2, session=b, expire_session=True)  # now b's
        s.write("own", "y", 1, session=a, expire_session=True)
        s.write("own", "y", 2)  # a plain write: permanent
        s.write("own", "z", 1, session=b, expire_session=True)
        s.write("own", "z", 2, session=a)  # a write as a, without expire_session
        sink.take()
        a.close()
        self.assertEqual(s.list("own", keys_only=False), [
            {"key": "x", "value": 2},
            {"key": "y", "value": 2},
            {"key": "z", "value": 2},
        ])
        self.assertEqual(sink.take(), [], "closing a removes none of these keys")
        b.close()
        self.assertEqual(s.list("own"), ["y", "z"])
        got = sink.take()
        self.assertEqual([(e.kind, e.key, e.session) for e in got], [("session_expire", "x", b.id)])

    def test_presence_events(self):
        eng = self.engine()
        sink = self.sink(eng, tarn.SESSIONS_BUCKET, "*", send_values=True)
        alice = eng.open_session("alice")
        bob = eng.open_session("bøb 🙂")
        self.assertNotEqual(alice.id, bob.id)
        self.assertEqual(bob.client_id, "bøb 🙂")
        eng.clock.advance(7)
        alice.close()
        got = sink.take()
        self.assertEqual(kinds(got), ["session_open", "session_open", "session_close"])
        for e, session, client in zip(got, [alice, bob, alice], ["alice", "bøb 🙂", "alice"]):
            self.assertEqual((e.bucket, e.key), ("$sessions", str(session.id)))
            self.assertEqual(e.value, {"session": session.id, "client_id": client})
            self.assertEqual((e.session, e.version), (session.id, 0))
            self.assertFalse(e.is_change)
        self.assertEqual([e.timestamp_ms for e in got], [T0, T0, T0 + 7])
        # One session's presence only.
        only_bob = self.sink(eng, "$sessions", str(bob.id))
        bob.close()
        self.assertEqual([(e.kind, e.key) for e in only_bob.take()], [("session_close", str(bob.id))])
        self.assertEqual(kinds(sink.take()), ["session_close"])

    def test_lease_expiry_with_the_manual_clock(self):
        eng = self.engine()
        s = eng.store
        sink = self.sink(eng, "*", "*")
        sess = eng.open_session("leased", lease_ms=1000)
        self.assertEqual(sess.lease_ms, 1000)
        s.write("lease", "k", 1, session=sess, expire_session=True)
        s.write("lease", "keep", 1, session=sess)
        eng.clock.advance(999)
        eng.settle()
        self.assertTrue(sess.is_open())
        sess.keepalive()  # the lease now runs to T0 + 999 + 1000
        eng.clock.advance(999)
        eng.settle()
        self.assertTrue(sess.is_open())
        self.assertEqual(s.list("lease"), ["k", "keep"])
        eng.clock.advance(1000)
        eng.settle()
        self.assertFalse(sess.is_open())
        self.assertEqual(s.list("lease"), ["keep"])
        got = sink.take()
        self.assertEqual(
            [(e.kind, e.key) for e in got],
            [
                ("session_open", str(sess.id)),
                ("write", "k"),
                ("write", "keep"),
                ("session_expire", "k"),
                ("session_close", str(sess.id)),
            ],
        )
        self.assertEqual(got[-1].timestamp_ms, T0 + 2998)
        e = self.assertTarnError(tarn.Closed, sess.keepalive)
        self.assertIn(str(sess.id), e.message)
        # The session's id stays known until close(); closing after the lease: fine.
        self.assertFalse(sess.closed)
        sess.close()
        self.assertTrue(sess.closed)
        self.assertFalse(sess.is_open())
        sess.close()
        self.assertEqual(sink.take(), [])

    def test_lease_closes_the_sessions_listeners(self):
        eng = self.engine()
        sess = eng.open_session("leased", lease_ms=10)
        own = self.sink(eng, "b", "*", session=sess)
        self.assertEqual(own.listener.session, sess.id)
        eng.store.write("b", "k", 1)
        self.assertEqual(len(own.take()), 1)
        eng.clock.advance(10)
        eng.settle()
        self.assertFalse(sess.is_open())
        eng.store.write("b", "k", 2)
        if self.STYLE == PULL:
            self.assertTarnError(tarn.Closed, own.listener.next)
        else:
            self.assertEqual(own.take(), [])
        self.assertEqual(own.stats().delivered, 1)
        own.listener.close()

    def test_ignore_own(self):
        eng = self.engine()
        s = eng.store
        a = eng.open_session("a")
        b = eng.open_session("b")
        ignoring = self.sink(eng, "io", "*", session=a, ignore_own=True)
        seeing = self.sink(eng, "io", "*", session=a)
        s.write("io", "by-a", 1, session=a)
        s.write("io", "by-b", 1, session=b)
        s.write("io", "by-none", 1)
        s.patch("io", "by-b", [], session=a)
        s.remove("io", "by-none", session=b)
        self.assertEqual(
            [(e.kind, e.key, e.session) for e in ignoring.take()],
            [("write", "by-b", b.id), ("write", "by-none", None), ("remove", "by-none", b.id)],
        )
        self.assertEqual(
            [(e.key, e.session) for e in seeing.take()],
            [("by-a", a.id), ("by-b", b.id), ("by-none", None), ("by-b", a.id), ("by-none", b.id)],
        )
        # ignore_own without a session ignores nothing.
        nobody = self.sink(eng, "io", "*", ignore_own=True)
        s.write("io", "again", 1, session=a)
        self.assertEqual([e.session for e in nobody.take()], [a.id])

    def test_session_shortcuts(self):
        eng = self.engine()
        with eng.open_session("shortcuts") as sess:
            self.assertTrue(sess.is_open())
            self.assertIn("shortcuts", repr(sess))
            if self.STYLE == PULL:
                l = sess.subscribe("sc", "*", send_values=True)
                take = l.drain
            else:
                q = queue.Queue()
                l = sess.listen("sc", "*", q.put, send_values=True)

                def take():
                    eng.settle()
                    return [q.get_nowait() for _ in range(q.qsize())]

            self.assertEqual(l.session, sess.id)
            self.assertIn(l, eng.listeners())
            self.assertIn(sess, eng.sessions())
            sess.signal("sc", "k", {"hello": 1})
            sess.signal_json("sc", "k2", b"[1]")
            eng.store.write("sc", "w", 1, session=sess)
            got = take()
            self.assertEqual(
                [(e.kind, e.key, e.session, e.value) for e in got],
                [
                    ("signal", "k", sess.id, {"hello": 1}),
                    ("signal", "k2", sess.id, [1]),
                    ("write", "w", sess.id, 1),
                ],
            )
        # Leaving the block closed the session, and with it its listener.
        self.assertTrue(sess.closed)
        self.assertNotIn(sess, eng.sessions())
        eng.store.write("sc", "w", 2)
        if self.STYLE == PULL:
            self.assertTarnError(tarn.Closed, l.next)
        else:
            self.assertEqual(take(), [])
        l.close()
        self.assertNotIn(l, eng.listeners())

    # -- bounds --------------------------------------------------------------------

    def test_drop_policy_exact_counts(self):
        eng = self.engine(workers=1)
        hold = self.worker_held(eng) if self.STYLE == CALLBACK else contextlib.nullcontext()
        with hold:
            # Callback style: the only worker is busy, so nothing is taken off the queue.
            sink = self.sink(eng, "drop", "*", capacity=2)
            versions = [eng.store.write("drop", "k", i) for i in range(5)]
            st = sink.stats()
            self.assertEqual((st.missed, st.panics), (3, 0))
        got = sink.take()
        self.assertEqual([e.version for e in got], versions[:2], "the NEW events are dropped")
        self.assertEqual([e.missed for e in got], [0, 0])
        self.assertEqual(tuple(sink.stats()), (2, 3, 0))
        v6 = eng.store.write("drop", "k", 6)
        got = sink.take()
        self.assertEqual([(e.version, e.missed) for e in got], [(v6, 3)])
        self.assertEqual(sink.stats(), tarn.ListenerStats(delivered=3, missed=3, panics=0))
        v7 = eng.store.write("drop", "k", 7)
        self.assertEqual([(e.version, e.missed) for e in sink.take()], [(v7, 0)])

    def test_block_policy_exact_counts(self):
        eng = self.engine(workers=1)
        progress = queue.Queue()
        errors = []

        def writer():
            try:
                for i in range(3):
                    progress.put(eng.store.write("block", "k", i))
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(repr(e))
                progress.put(None)

        if self.STYLE == PULL:
            l = eng.bus.subscribe("block", "*", capacity=1, block=True, block_timeout_ms=WAIT_MS)
            t = threading.Thread(target=writer)
            t.start()
            written = [progress.get(timeout=WAIT_S)]  # the first write finds room
            got = []
            for pulled in range(1, 4):
                # Write n returns only once its event is queued, and the queue holds 1,
                # so after p pulls at most p + 1 writes have returned: the third write
                # (the end of the writer) needs the second pull.
                if pulled <= 2:
                    self.assertTrue(t.is_alive(), f"the writer finished before pull {pulled}")
                e = l.next(WAIT_MS)
                self.assertIsNotNone(e)
                got.append(e)
                while True:
                    try:
                        written.append(progress.get_nowait())
                    except queue.Empty:
                        break
                self.assertLessEqual(len(written), pulled + 1)
            t.join(WAIT_S)
            self.assertFalse(t.is_alive())
            while len(written) < 3:
                written.append(progress.get(timeout=WAIT_S))
        else:
            q = queue.Queue()
            with self.worker_held(eng):
                l = eng.bus.listen("block", "*", q.put, capacity=1, block=True, block_timeout_ms=WAIT_MS)
                t = threading.Thread(target=writer)
                t.start()
                written = [progress.get(timeout=WAIT_S)]
                # The only worker is held, so nothing drains: the second write waits.
                self.assertTrue(t.is_alive())
                self.assertEqual(l.stats().delivered, 0)
                self.assertTrue(progress.empty())
            t.join(WAIT_S)
            self.assertFalse(t.is_alive())
            written += [progress.get(timeout=WAIT_S) for _ in range(2)]
            eng.settle()
            got = [q.get(timeout=WAIT_S) for _ in range(3)]
            self.assertTrue(q.empty())
        self.assertEqual(errors, [])
        self.assertEqual([e.version for e in got], written)
        self.assertEqual([e.missed for e in got], [0, 0, 0])
        self.assertEqual(tuple(l.stats()), (3, 0, 0))

    def test_block_policy_times_out_then_drops_and_counts(self):
        eng = self.engine(workers=1)
        hold = self.worker_held(eng) if self.STYLE == CALLBACK else contextlib.nullcontext()
        with hold:
            sink = self.sink(eng, "bt", "*", capacity=1, block=True, block_timeout_ms=1)
            v1 = eng.store.write("bt", "k", 1)
            eng.store.write("bt", "k", 2)  # waits 1 ms for room, then is dropped
            self.assertEqual(sink.stats().missed, 1)
        got = sink.take()
        self.assertEqual([e.version for e in got], [v1])
        v3 = eng.store.write("bt", "k", 3)
        self.assertEqual([(e.version, e.missed) for e in sink.take()], [(v3, 1)])


class TestPullStyle(BusBehaviour, TarnBusCase):
    STYLE = PULL

    def test_next_waits_and_times_out(self):
        eng = self.engine()
        l = eng.bus.subscribe("n", "*")
        self.assertFalse(l.is_callback)
        self.assertIsNone(l.next())
        self.assertIsNone(l.next(0))
        self.assertIsNone(l.next(None))
        self.assertIsNone(l.next(1))  # waits 1 ms, then None (TARN_TIMEOUT)
        started = threading.Barrier(2)
        result = queue.Queue()

        def puller():
            started.wait(WAIT_S)
            result.put(l.next(WAIT_MS))

        t = threading.Thread(target=puller)
        t.start()
        started.wait(WAIT_S)
        v = eng.store.write("n", "k", 1)  # wakes the waiting puller (or is there first)
        e = result.get(timeout=WAIT_S)
        t.join(WAIT_S)
        self.assertEqual((e.kind, e.version), ("write", v))
        self.assertTarnError(tarn.InvalidArgument, l.next, -1)
        self.assertRaises(TypeError, l.next, 1.5)

    def test_fd_wakes_poll(self):
        eng = self.engine()
        l = eng.bus.subscribe("fd", "*")
        fd = l.fd()
        self.assertIsInstance(fd, int)
        self.assertGreaterEqual(fd, 0)
        self.assertEqual(l.fd(), fd, "one fd per listener")
        p = select.poll()
        p.register(fd, select.POLLIN)
        self.assertEqual(p.poll(0), [], "not readable while empty")
        eng.store.write("fd", "a", 1)
        self.assertEqual(p.poll(0), [(fd, select.POLLIN)])
        eng.store.write("fd", "b", 2)
        self.assertEqual(p.poll(0), [(fd, select.POLLIN)])
        self.assertEqual(l.next().key, "a")
        self.assertEqual(p.poll(0), [(fd, select.POLLIN)], "still one event waiting")
        self.assertEqual(l.next().key, "b")
        self.assertEqual(p.poll(0), [], "not readable once drained")
        # Readable events that arrived before the first fd() call are seen too.
        l2 = eng.bus.subscribe("fd2", "*")
        eng.store.write("fd2", "c", 3)
        p2 = select.poll()
        p2.register(l2.fd(), select.POLLIN)
        self.assertEqual(len(p2.poll(0)), 1)
        self.assertEqual(len(l2.drain()), 1)
        self.assertEqual(p2.poll(0), [])
        self.assertEqual(p.poll(0), [], "l saw nothing of fd2")
        # A thread waiting in poll() wakes on a write from another thread.
        ready = queue.Queue()
        t = threading.Thread(target=lambda: ready.put(p.poll(WAIT_MS)))
        t.start()
        eng.store.write("fd", "d", 4)
        self.assertEqual(ready.get(timeout=WAIT_S), [(fd, select.POLLIN)])
        t.join(WAIT_S)
        self.assertEqual(l.next().key, "d")

    def test_listener_context_manager_and_close_twice(self):
        eng = self.engine()
        with eng.bus.subscribe("cm", "*") as l:
            eng.store.write("cm", "k", 1)
            self.assertEqual(len(l.drain()), 1)
            self.assertIn("pull", repr(l))
        self.assertTrue(l.closed)
        self.assertIn("closed", repr(l))
        l.close()
        self.assertEqual(eng.listeners(), [])
        self.assertTarnError(tarn.NotFound, l.next)


class TestCallbackStyle(BusBehaviour, TarnBusCase):
    STYLE = CALLBACK

    def test_a_raising_callback_is_contained(self):
        eng = self.engine()
        seen = queue.Queue()

        def callback(e):
            if e.key == "boom":
                raise ValueError("callback raises")
            if e.key == "exit":
                raise SystemExit(3)
            seen.put(e.key)

        l = eng.bus.listen("r", "*", callback)
        self.assertTrue(l.is_callback)
        self.assertEqual((l.callback_errors, l.last_callback_error), (0, None))
        eng.store.write("r", "boom", 1)
        eng.store.write("r", "after", 1)
        self.assertEqual(seen.get(timeout=WAIT_S), "after")
        eng.settle()
        self.assertEqual(l.callback_errors, 1)
        self.assertIsInstance(l.last_callback_error, ValueError)
        self.assertEqual(tuple(l.stats()), (2, 0, 0), "no panic reached the library")
        eng.store.write("r", "exit", 1)
        eng.store.write("r", "still", 1)
        self.assertEqual(seen.get(timeout=WAIT_S), "still")
        eng.settle()
        self.assertEqual(l.callback_errors, 2)
        self.assertIsInstance(l.last_callback_error, SystemExit)
        self.assertEqual(l.stats().delivered, 4)

    def test_callback_may_call_the_engine(self):
        eng = self.engine()
        done = queue.Queue()

        def copy(e):
            eng.store.write("out", e.key, {"copied": e.value})
            done.put(e.key)

        eng.bus.listen("in", "*", copy, send_values=True)
        for i in range(20):
            eng.store.write("in", f"k{i:02}", i)
        self.assertEqual([done.get(timeout=WAIT_S) for _ in range(20)], [f"k{i:02}" for i in range(20)])
        eng.settle()
        self.assertEqual(eng.store.list("out"), [f"k{i:02}" for i in range(20)])
        self.assertEqual(eng.store.get("out", "k07"), {"copied": 7})

    def test_settle_inside_a_callback_is_not_supported(self):
        eng = self.engine()
        out = queue.Queue()

        def callback(_e):
            try:
                eng.settle()
                out.put("settled")
            except tarn.NotSupported as e:
                out.put(e)

        eng.bus.listen("s", "*", callback)
        eng.store.write("s", "k", 1)
        self.assertIsInstance(out.get(timeout=WAIT_S), tarn.NotSupported)

    def test_callback_closes_its_own_listener(self):
        eng = self.engine()
        calls = []
        holder = {}

        def once(e):
            calls.append(e.key)
            holder["l"].close()  # from inside its own callback: does not wait for itself

        holder["l"] = eng.bus.listen("once", "*", once)
        eng.store.write("once", "a", 1)
        eng.settle()
        eng.store.write("once", "b", 1)
        eng.settle()
        self.assertEqual(calls, ["a"])
        self.assertTrue(holder["l"].closed)
        self.assertEqual(eng.listeners(), [])

    def test_dropped_listener_object_keeps_its_callback_alive(self):
        eng = self.engine()
        got = queue.Queue()
        eng.bus.listen("gc", "*", lambda e: got.put(e.version))  # result not kept
        gc.collect()
        v = eng.store.write("gc", "k", 1)
        self.assertEqual(got.get(timeout=WAIT_S), v)
        self.assertEqual(len(eng.listeners()), 1)

    def test_callback_listener_refuses_pulling(self):
        eng = self.engine()
        l = eng.bus.listen("np", "*", lambda e: None)
        e = self.assertTarnError(tarn.NotSupported, l.next)
        self.assertIn("callback", e.message)
        self.assertTarnError(tarn.NotSupported, l.next, 10)
        self.assertTarnError(tarn.NotSupported, l.fd)
        self.assertIn("callback", repr(l))

    def test_close_waits_for_a_running_callback(self):
        eng = self.engine()
        entered = threading.Event()
        release = threading.Event()
        finished = []

        def slow(_e):
            entered.set()
            release.wait(WAIT_S)
            finished.append(True)

        l = eng.bus.listen("slow", "*", slow)
        eng.store.write("slow", "k", 1)
        self.assertTrue(entered.wait(WAIT_S))
        closer = threading.Thread(target=l.close)
        closer.start()
        release.set()
        closer.join(WAIT_S)
        self.assertFalse(closer.is_alive())
        self.assertEqual(finished, [True], "close returned only after the callback")


# ---------------------------------------------------------------------------------------
# Errors, arguments, and lifecycle (independent of the delivery style).
# ---------------------------------------------------------------------------------------


BAD_BUCKETS = ["", " x", "x.", "$sys", "$", "a\tb", "a\x7fb"]
BAD_KEYS = ["", "a\nb", "x\x01", "\x85"]


class TestErrors(TarnBusCase):
    def test_unknown_and_freed_listener_ids(self):
        eng = self.engine()
        l = eng.bus.subscribe("e", "*")
        l.close()
        for op in (l.next, l.fd, l.stats):
            with self.subTest(op=op.__name__):
                e = self.assertTarnError(tarn.NotFound, op)
                self.assertIn(str(l.id), e.message)
        cb = eng.bus.listen("e", "*", lambda e: None)
        cb.close()
        self.assertTarnError(tarn.NotFound, cb.stats)
        # Ids never handed out.
        for lid in (0, 987654321, (1 << 64) - 1):
            with self.subTest(lid=lid):
                self.assertTarnError(tarn.NotFound, eng._call, tarn._lib.tarn_listener_free, lid)
                self.assertTarnError(
                    tarn.NotFound, eng._call, tarn._lib.tarn_listener_get_stats, lid,
                    ctypes.byref(tarn.tarn_listener_stats()),
                )
        # Releasing an id through C directly: the wrapper's close stays harmless.
        l2 = eng.bus.subscribe("e", "*")
        eng._call(tarn._lib.tarn_listener_free, l2.id)
        self.assertTarnError(tarn.NotFound, l2.next)
        l2.close()

    def test_closed_and_unknown_session_ids(self):
        eng = self.engine()
        sess = eng.open_session("gone")
        sid = sess.id
        sess.close()
        for name, op in [
            ("keepalive", sess.keepalive),
            ("subscribe", lambda: eng.bus.subscribe("b", "*", session=sid)),
            ("listen", lambda: eng.bus.listen("b", "*", lambda e: None, session=sess)),
            ("signal", lambda: eng.bus.signal("b", "k", 1, session=sid)),
            ("session.signal", lambda: sess.signal("b", "k")),
            ("session.subscribe", lambda: sess.subscribe("b", "*")),
            ("expire_session write", lambda: eng.store.write("b", "k", 1, session=sid, expire_session=True)),
            ("close by raw id", lambda: eng._call(tarn._lib.tarn_session_close, sid)),
            ("is_open by raw id", lambda: eng._call(
                tarn._lib.tarn_session_is_open, sid, ctypes.byref(ctypes.c_bool()))),
        ]:
            with self.subTest(op=name):
                self.assertTarnError(tarn.NotFound, op)
        self.assertFalse(sess.is_open())
        self.assertEqual(eng.listeners(), [], "no listener was made")
        self.assertTarnError(tarn.NotFound, eng._call, tarn._lib.tarn_session_keepalive, 424242)
        self.assertTarnError(tarn.NotFound, eng.bus.subscribe, "b", "*", session=424242)
        self.assertEqual(eng.store.list("b"), [])

    def test_expire_session_needs_a_session(self):
        eng = self.engine()
        e = self.assertTarnError(tarn.InvalidArgument, eng.store.write, "b", "k", 1, expire_session=True)
        self.assertIn("session", e.message)
        self.assertEqual(eng.store.last_version(), 0)

    def test_invalid_pattern_names(self):
        eng = self.engine()
        for bucket in BAD_BUCKETS:
            with self.subTest(bucket=bucket):
                self.assertTarnError(tarn.InvalidArgument, eng.bus.subscribe, bucket, "*")
                self.assertTarnError(tarn.InvalidArgument, eng.bus.listen, bucket, "k", lambda e: None)
                self.assertTarnError(tarn.InvalidArgument, eng.bus.signal, bucket, "k")
        for key in BAD_KEYS:
            with self.subTest(key=key):
                self.assertTarnError(tarn.InvalidArgument, eng.bus.subscribe, "b", key)
                self.assertTarnError(tarn.InvalidArgument, eng.bus.listen, "*", key, lambda e: None)
                self.assertTarnError(tarn.InvalidArgument, eng.bus.signal, "b", key)
        # Wildcards and the system bucket are patterns, not names a signal may use.
        self.assertTarnError(tarn.InvalidArgument, eng.bus.signal, "*", "k")
        self.assertTarnError(tarn.InvalidArgument, eng.bus.signal, "b", "*")
        self.assertTarnError(tarn.InvalidArgument, eng.bus.signal, "$sessions", "1")
        self.assertTarnError(tarn.InvalidArgument, eng.bus.subscribe, "b\0", "*")
        self.assertTarnError(tarn.InvalidUtf8, eng.bus.subscribe, b"\xff", "*")
        self.assertTarnError(tarn.TooLarge, eng.bus.subscribe, "b" * 129, "*")
        self.assertEqual(eng.listeners(), [])

    def test_invalid_json(self):
        eng = self.engine()
        for text in [b"{bad", b"", b"1 2", b"NaN", "\"\ud800\""]:
            with self.subTest(text=text):
                self.assertTarnError(tarn.InvalidJson, eng.bus.signal_json, "b", "k", text)
        self.assertRaises(ValueError, eng.bus.signal, "b", "k", float("nan"))
        self.assertRaises(TypeError, eng.bus.signal, "b", "k", object())
        self.assertRaises(TypeError, eng.store.write, "b", "k", 1, user_data=object())

    def test_wrapper_arguments(self):
        eng = self.engine()
        other = self.engine()
        for kw in [{"capacity": 0}, {"capacity": -1}, {"block_timeout_ms": 0}, {"from_version": -1}]:
            with self.subTest(**kw):
                self.assertTarnError(tarn.InvalidArgument, eng.bus.subscribe, "b", "*", **kw)
        self.assertRaises(TypeError, eng.bus.subscribe, "b", "*", capacity="1")
        self.assertRaises(TypeError, eng.bus.listen, "b", "*", "not callable")
        self.assertRaises(TypeError, eng.bus.listen, "b", "*", None)
        self.assertTarnError(tarn.InvalidArgument, eng.open_session, "c", lease_ms=0)
        self.assertTarnError(tarn.InvalidArgument, eng.open_session, "")
        self.assertTarnError(tarn.InvalidArgument, eng.open_session, "x" * 257)
        self.assertTarnError(tarn.InvalidArgument, eng.open_session, "a\nb")
        self.assertTarnError(tarn.InvalidArgument, eng.open_session, "a\0b")
        eng.open_session("x" * tarn.MAX_CLIENT_ID_BYTES).close()
        foreign = other.open_session("other")
        e = self.assertTarnError(tarn.InvalidArgument, eng.store.write, "b", "k", 1, session=foreign)
        self.assertIn("another engine", e.message)
        self.assertRaises(TypeError, eng.store.write, "b", "k", 1, session=True)
        self.assertRaises(TypeError, eng.store.write, "b", "k", 1, session="1")
        self.assertTarnError(tarn.InvalidArgument, eng.store.write, "b", "k", 1, request_id="a\0b")
        self.assertRaises(TypeError, eng.store.write, "b", "k", 1, request_id=5)
        self.assertEqual(eng.store.last_version(), 0)
        self.assertEqual(eng.listeners(), [])

    def test_unknown_listen_flags_are_refused_by_the_library(self):
        eng = self.engine()
        opts = tarn.tarn_listen_options()
        opts.flags = 0x100
        out = ctypes.c_uint64(0)
        e = self.assertTarnError(
            tarn.InvalidArgument, eng._call, tarn._lib.tarn_bus_subscribe, 0, b"b", b"*",
            ctypes.byref(opts), ctypes.byref(out),
        )
        self.assertIn("flag", e.message)


class TestLifecycle(TarnBusCase):
    def test_free_releases_listeners_and_sessions(self):
        eng = tarn.Engine(manual_clock=T0, workers=2)
        got = queue.Queue()
        cb = eng.bus.listen("*", "*", got.put)
        pull = eng.bus.subscribe("*", "*")
        sess = eng.open_session("s")
        owned = sess.subscribe("x", "*")
        eng.store.write("x", "k", 1)
        eng.settle()
        self.assertEqual(len(eng.listeners()), 3)
        eng.free()
        for l in (cb, pull, owned):
            self.assertTrue(l.closed)
            self.assertTarnError(tarn.Closed, l.stats)
            l.close()  # harmless after the free
        self.assertTarnError(tarn.Closed, pull.next)
        self.assertTrue(sess.closed)
        self.assertFalse(sess.is_open())
        self.assertTarnError(tarn.Closed, sess.keepalive)
        sess.close()
        self.assertEqual((eng.listeners(), eng.sessions()), ([], []))
        gc.collect()

    def test_close_then_bus_calls_are_closed(self):
        eng = self.engine()
        l = eng.bus.subscribe("c", "*")
        sess = eng.open_session("c")
        eng.close()
        self.assertTarnError(tarn.Closed, eng.bus.subscribe, "c", "*")
        self.assertTarnError(tarn.Closed, eng.bus.listen, "c", "*", lambda e: None)
        self.assertTarnError(tarn.Closed, eng.bus.signal, "c", "k")
        self.assertTarnError(tarn.Closed, eng.open_session, "d")
        self.assertTarnError(tarn.Closed, sess.keepalive)
        l.close()
        sess.close()

    def test_free_wakes_a_thread_waiting_in_next(self):
        eng = tarn.Engine(manual_clock=T0, workers=2)
        l = eng.bus.subscribe("w", "*")
        started = threading.Barrier(2)
        outcome = queue.Queue()

        def waiter():
            started.wait(WAIT_S)
            try:
                outcome.put(l.next(60_000))
            except tarn.Error as e:
                outcome.put(e)

        t = threading.Thread(target=waiter)
        t.start()
        started.wait(WAIT_S)
        eng.free()
        result = outcome.get(timeout=WAIT_S)  # long before the 60 s timeout
        t.join(WAIT_S)
        self.assertIsInstance(result, tarn.Closed)

    def test_free_wakes_a_blocked_publisher(self):
        eng = tarn.Engine(manual_clock=T0, workers=2)
        eng.bus.subscribe("bp", "*", capacity=1, block=True, block_timeout_ms=60_000)
        eng.store.write("bp", "k", 1)
        outcome = queue.Queue()
        started = threading.Barrier(2)

        def writer():
            started.wait(WAIT_S)
            try:
                outcome.put(eng.store.write("bp", "k", 2))  # blocks: the queue is full
            except tarn.Error as e:
                outcome.put(e)

        t = threading.Thread(target=writer)
        t.start()
        started.wait(WAIT_S)
        eng.free()
        result = outcome.get(timeout=WAIT_S)  # long before the 60 s block timeout
        t.join(WAIT_S)
        self.assertTrue(result == 2 or isinstance(result, tarn.Closed), result)

    def test_free_with_a_callback_running(self):
        eng = tarn.Engine(manual_clock=T0, workers=2)
        entered = threading.Event()
        release = threading.Event()
        finished = []

        def slow(_e):
            entered.set()
            release.wait(WAIT_S)
            finished.append(True)

        eng.bus.listen("f", "*", slow)
        eng.store.write("f", "k", 1)
        self.assertTrue(entered.wait(WAIT_S))
        freer = threading.Thread(target=eng.free)
        freer.start()
        release.set()
        freer.join(WAIT_S)
        self.assertFalse(freer.is_alive())
        self.assertEqual(finished, [True])
        gc.collect()

    def test_callback_frees_its_engine(self):
        eng = tarn.Engine(manual_clock=T0, workers=2)
        done = queue.Queue()

        def free_me(_e):
            eng.free()
            done.put(eng.closed)

        eng.bus.listen("self", "*", free_me)
        eng.store.write("self", "k", 1)
        self.assertTrue(done.get(timeout=WAIT_S))
        self.assertTarnError(tarn.Closed, eng.store.read, "self", "k")
        gc.collect()

    def test_many_callback_engines_are_collected(self):
        for _ in range(10):
            eng = tarn.Engine(manual_clock=0, workers=1)
            q = queue.Queue()
            eng.bus.listen("*", "*", q.put)
            eng.open_session("s")
            eng.store.write("g", "k", 1)
            q.get(timeout=WAIT_S)
            del eng
        gc.collect()


def main():
    prog = unittest.main(exit=False, verbosity=2)
    result = prog.result
    if result.testsRun == 0:
        print("error: no tests ran", file=sys.stderr)
        return 1
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
