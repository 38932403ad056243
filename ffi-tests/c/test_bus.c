/*
 * test_bus.c: tests of tarn's C ABI (include/tarn.h, ABI 2) for the event bus and
 * sessions: listeners (pull, callback, file descriptor), signals, change events and
 * their metadata, watching from a version, sessions with their keys, presence and
 * leases, and both bound policies.
 *
 * Built and run by tests/ffi.rs (`cargo test --test ffi c_programs`) with
 *   cc -std=c11 -g -Wall -Wextra -Werror -pedantic -I include ffi-tests/c/test_bus.c
 *      -L target/debug -ltarn -Wl,-rpath,target/debug -lpthread
 *      -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
 * and run from the repository root under LeakSanitizer. Exit status 0: every check
 * passed. The last line of output is "N passed, M failed".
 *
 * Nothing sleeps. A pull listener's queue is filled by the publishing call itself, so
 * after tarn_store_write returns its event is waiting (tarn_listener_next with timeout
 * 0 takes it). Callbacks run on engine workers: tarn_engine_settle(e, 0) waits until
 * they have run. Time moves only through the manual engine clock (tarn_clock_advance
 * + tarn_engine_settle fire the timers it passes). Threads meet on pthread barriers,
 * or wait in a tarn call (a blocked publisher, tarn_listener_next, poll) that the
 * other side ends. Every wait has a 10 s limit, so a broken library fails a check
 * instead of hanging.
 *
 * Events are parsed minimally: the top-level fields come in a fixed order
 * ({"kind","bucket","key","version","timestamp_ms","session","request_id","user_data",
 * "value","ops","missed"}), so most checks compare the whole event text with the one
 * expected.
 */
#define _POSIX_C_SOURCE 200809L

#include "tarn.h"

#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define T0 UINT64_C(1000000)
/* The longest any wait in this file may take (none should come close). */
#define WAIT_MS 10000

/* An engine on a manual clock at T0 with two workers; `change_log` SIZE_MAX keeps the
 * default change log. */
static tarn_engine *engine_with_log(size_t change_log)
{
    tarn_engine_builder *b = tarn_engine_builder_new();
    if (!CHECK(b != NULL)) {
        return NULL;
    }
    OK(tarn_engine_builder_manual_clock(b, T0));
    OK(tarn_engine_builder_workers(b, 2));
    if (change_log != SIZE_MAX) {
        OK(tarn_engine_builder_change_log_capacity(b, change_log));
    }
    tarn_engine *e = NULL;
    OK(tarn_engine_builder_build(b, &e));
    tarn_engine_builder_free(b);
    CHECK(e != NULL);
    return e;
}

static tarn_engine *manual_engine(void) { return engine_with_log(SIZE_MAX); }

static uint64_t last_version(const tarn_engine *e)
{
    uint64_t v = SENTINEL;
    OK(tarn_store_last_version(e, &v));
    return v;
}

static uint64_t clock_now(const tarn_engine *e)
{
    uint64_t now = SENTINEL;
    OK(tarn_clock_now(e, &now));
    return now;
}

static uint64_t subscribe_at(const tarn_engine *e, uint64_t session, const char *bucket,
                             const char *key, const tarn_listen_options *o, const char *file,
                             int line)
{
    uint64_t id = 0;
    status_at(tarn_bus_subscribe(e, session, bucket, key, o, &id), TARN_OK, NULL, file, line,
              "tarn_bus_subscribe");
    check_at(id != 0, file, line, "a listener id is not 0");
    return id;
}

/* A pull listener (no session); its id. */
#define SUBSCRIBE(e, bucket, key, ...) subscribe_at((e), 0, (bucket), (key), (__VA_ARGS__), __FILE__, __LINE__)

static const tarn_listen_options with_values = {.flags = TARN_LISTEN_SEND_VALUES};

/* One event, copied out of its tarn_buf as a NUL-terminated string. */
#define EV_CAP 4096
struct ev {
    char s[EV_CAP];
    size_t len;
};

/* Takes the next event of `l` into *out, waiting up to timeout_ms. On failure, checks
 * that out_event was not written. */
static tarn_status pull_at(const tarn_engine *e, uint64_t l, uint64_t timeout_ms,
                           struct ev *out, const char *file, int line)
{
    tarn_buf b;
    POISON(b);
    tarn_status st = tarn_listener_next(e, l, timeout_ms, &b);
    out->s[0] = '\0';
    out->len = 0;
    if (st == TARN_OK) {
        size_t n = b.len < EV_CAP - 1 ? b.len : EV_CAP - 1;
        if (b.data != NULL) {
            memcpy(out->s, b.data, n);
        }
        out->s[n] = '\0';
        out->len = b.len;
        tarn_buf_free(&b);
    } else {
        check_at(POISONED(b), file, line, "a failed tarn_listener_next leaves out_event alone");
    }
    return st;
}

#define PULL(e, l, timeout, ev) pull_at((e), (l), (timeout), (ev), __FILE__, __LINE__)

/* The next event of `l` (waiting up to WAIT_MS) is exactly `want`. */
static bool expect_event_at(const tarn_engine *e, uint64_t l, const char *want,
                            const char *file, int line)
{
    struct ev ev;
    if (!status_at(pull_at(e, l, WAIT_MS, &ev, file, line), TARN_OK, NULL, file, line,
                   "tarn_listener_next (an event is expected)")) {
        fprintf(stdout, "    expected: %s\n", want);
        return false;
    }
    if (!check_at(strcmp(ev.s, want) == 0, file, line, "the event is the expected one")) {
        fprintf(stdout, "    got:      %s\n    expected: %s\n", ev.s, want);
        return false;
    }
    return true;
}

#define EXPECT_EVENT(e, l, want) expect_event_at((e), (l), (want), __FILE__, __LINE__)

/* No event waits on `l`: tarn_listener_next without waiting gives TARN_TIMEOUT. */
static void expect_none_at(const tarn_engine *e, uint64_t l, const char *file, int line)
{
    struct ev ev;
    tarn_status st = pull_at(e, l, 0, &ev, file, line);
    if (!status_at(st, TARN_TIMEOUT, NULL, file, line, "tarn_listener_next (no event expected)") &&
        st == TARN_OK) {
        fprintf(stdout, "    unexpected event: %s\n", ev.s);
    }
}

#define EXPECT_NONE(e, l) expect_none_at((e), (l), __FILE__, __LINE__)

/* The number after the first top-level "name": (version, timestamp_ms, session come
 * before any user-supplied text). UINT64_MAX if absent or null. */
static uint64_t ev_u64(const char *s, const char *name)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", name);
    const char *p = strstr(s, pat);
    if (p == NULL) {
        return UINT64_MAX;
    }
    p += strlen(pat);
    if (*p < '0' || *p > '9') {
        return UINT64_MAX;
    }
    return strtoull(p, NULL, 10);
}

/* "missed" is the last field. */
static uint64_t ev_missed(const char *s)
{
    const char *p = NULL;
    for (const char *q = strstr(s, ",\"missed\":"); q != NULL; q = strstr(q + 1, ",\"missed\":")) {
        p = q;
    }
    return p == NULL ? UINT64_MAX : strtoull(p + strlen(",\"missed\":"), NULL, 10);
}

/* The event starts {"kind":kind,"bucket":bucket,"key":key,"version": (plain names). */
static bool ev_is(const char *s, const char *kind, const char *bucket, const char *key)
{
    char want[512];
    snprintf(want, sizeof want, "{\"kind\":\"%s\",\"bucket\":\"%s\",\"key\":\"%s\",\"version\":",
             kind, bucket, key);
    return strncmp(s, want, strlen(want)) == 0;
}

/* The whole text of an event. `session` 0 is null; the strings are JSON text. */
static const char *event_json(char *dst, size_t cap, const char *kind, const char *bucket,
                              const char *key, uint64_t version, uint64_t ts, uint64_t session,
                              const char *request_id, const char *user_data, const char *value,
                              const char *ops, uint64_t missed)
{
    char sess[32];
    if (session == 0) {
        snprintf(sess, sizeof sess, "null");
    } else {
        snprintf(sess, sizeof sess, "%" PRIu64, session);
    }
    snprintf(dst, cap,
             "{\"kind\":\"%s\",\"bucket\":\"%s\",\"key\":\"%s\",\"version\":%" PRIu64
             ",\"timestamp_ms\":%" PRIu64 ",\"session\":%s,\"request_id\":%s,\"user_data\":%s,"
             "\"value\":%s,\"ops\":%s,\"missed\":%" PRIu64 "}",
             kind, bucket, key, version, ts, sess, request_id, user_data, value, ops, missed);
    return dst;
}

/* A plain event (no meta, no ops, nothing missed). */
static const char *plain_event(char *dst, size_t cap, const char *kind, const char *bucket,
                               const char *key, uint64_t version, uint64_t ts, uint64_t session,
                               const char *value)
{
    return event_json(dst, cap, kind, bucket, key, version, ts, session, "null", "null", value,
                      "null", 0);
}

/* The next events of `l` are exactly these kind/bucket/key triples, then none. */
struct want {
    const char *kind, *bucket, *key;
};

static void expect_seq_at(const tarn_engine *e, uint64_t l, const struct want *w, size_t n,
                          const char *file, int line)
{
    for (size_t i = 0; i < n; i++) {
        struct ev ev;
        if (!status_at(pull_at(e, l, 0, &ev, file, line), TARN_OK, NULL, file, line,
                       "tarn_listener_next (an event is expected)")) {
            fprintf(stdout, "    missing event #%zu: %s %s/%s\n", i, w[i].kind, w[i].bucket,
                    w[i].key);
            return;
        }
        if (!check_at(ev_is(ev.s, w[i].kind, w[i].bucket, w[i].key), file, line,
                      "the event is the expected one")) {
            fprintf(stdout, "    event #%zu: got %s\n    expected %s %s/%s\n", i, ev.s, w[i].kind,
                    w[i].bucket, w[i].key);
        }
    }
    expect_none_at(e, l, file, line);
}

#define EXPECT_SEQ(e, l, ...)                                                              \
    do {                                                                                   \
        static const struct want w_[] = {__VA_ARGS__};                                     \
        expect_seq_at((e), (l), w_, sizeof w_ / sizeof w_[0], __FILE__, __LINE__);         \
    } while (0)

static tarn_listener_stats stats_at(const tarn_engine *e, uint64_t l, const char *file, int line)
{
    tarn_listener_stats s;
    POISON(s);
    status_at(tarn_listener_get_stats(e, l, &s), TARN_OK, NULL, file, line,
              "tarn_listener_get_stats");
    return s;
}

#define STATS(e, l) stats_at((e), (l), __FILE__, __LINE__)

/* The listener's counters are exactly these. */
static void expect_stats_at(const tarn_engine *e, uint64_t l, uint64_t delivered,
                            uint64_t missed, const char *file, int line)
{
    tarn_listener_stats s = stats_at(e, l, file, line);
    if (!check_at(s.delivered == delivered && s.missed == missed && s.panics == 0, file, line,
                  "the listener's counters are the expected ones")) {
        fprintf(stdout,
                "    got delivered %" PRIu64 ", missed %" PRIu64 ", panics %" PRIu64
                "; expected %" PRIu64 ", %" PRIu64 ", 0\n",
                s.delivered, s.missed, s.panics, delivered, missed);
    }
}

#define EXPECT_STATS(e, l, delivered, missed) \
    expect_stats_at((e), (l), (delivered), (missed), __FILE__, __LINE__)

static void expect_absent_at(const tarn_engine *e, const char *bucket, const char *key,
                             const char *file, int line)
{
    tarn_buf b;
    POISON(b);
    status_at(tarn_store_read(e, bucket, key, &b, NULL), TARN_NOT_FOUND, NULL, file, line,
              "tarn_store_read of an absent key");
    check_at(POISONED(b), file, line, "a failed read leaves out_doc alone");
}

#define EXPECT_ABSENT(e, bucket, key) expect_absent_at((e), (bucket), (key), __FILE__, __LINE__)

static void expect_doc_at(const tarn_engine *e, const char *bucket, const char *key,
                          const char *json, const char *file, int line)
{
    tarn_buf b;
    POISON(b);
    if (!status_at(tarn_store_read(e, bucket, key, &b, NULL), TARN_OK, NULL, file, line,
                   "tarn_store_read")) {
        return;
    }
    check_at(b.len == strlen(json) && memcmp(b.data, json, b.len) == 0, file, line,
             "the stored document is the expected one");
    tarn_buf_free(&b);
}

#define EXPECT_DOC(e, bucket, key, json) expect_doc_at((e), (bucket), (key), (json), __FILE__, __LINE__)

static bool is_open_at(const tarn_engine *e, uint64_t s, const char *file, int line)
{
    bool open = false;
    status_at(tarn_session_is_open(e, s, &open), TARN_OK, NULL, file, line, "tarn_session_is_open");
    return open;
}

#define IS_OPEN(e, s) is_open_at((e), (s), __FILE__, __LINE__)

static uint64_t open_session_at(const tarn_engine *e, const char *client, uint64_t lease,
                                const char *file, int line)
{
    uint64_t s = 0;
    status_at(tarn_session_open(e, client, lease, &s), TARN_OK, NULL, file, line,
              "tarn_session_open");
    check_at(s != 0, file, line, "a session id is not 0");
    return s;
}

#define OPEN_SESSION(e, client, lease) open_session_at((e), (client), (lease), __FILE__, __LINE__)

/* Writes as `session`, owned by it (TARN_WRITE_EXPIRE_SESSION). */
static tarn_status write_owned(const tarn_engine *e, uint64_t session, const char *bucket,
                               const char *key, const char *json, uint64_t *version)
{
    tarn_write_options o = {.flags = TARN_WRITE_EXPIRE_SESSION, .meta = {.session = session}};
    return tarn_store_write(e, bucket, key, JSON(json), &o, version);
}

/* ------------------------------------------------------------------------------------
 * Which listeners see what.
 * ---------------------------------------------------------------------------------- */

static void test_wildcard_matrix(void)
{
    tarn_engine *e = manual_engine();
    if (e == NULL) {
        return;
    }
    uint64_t exact = SUBSCRIBE(e, "b1", "k1", NULL);
    uint64_t exact2 = SUBSCRIBE(e, "b1", "k1", NULL); /* two listeners on one pattern */
    uint64_t bucket_wide = SUBSCRIBE(e, "b1", "*", NULL);
    uint64_t key_wide = SUBSCRIBE(e, "*", "k1", NULL);
    uint64_t global = SUBSCRIBE(e, "*", "*", NULL);
    uint64_t other = SUBSCRIBE(e, "b3", "k1", NULL);
    uint64_t ids[] = {exact, exact2, bucket_wide, key_wide, global, other};
    for (size_t i = 0; i < 6; i++) {
        for (size_t j = i + 1; j < 6; j++) {
            CHECK(ids[i] != ids[j]);
        }
    }
    /* The index keys on the literal names: a bucket "*k" or key "k1*" is no pattern. */
    uint64_t literal = SUBSCRIBE(e, "b1", "k1*", NULL);

    const char *pairs[][2] = {{"b1", "k1"}, {"b1", "k2"}, {"b2", "k1"}, {"b2", "k2"}};
    for (size_t i = 0; i < 4; i++) {
        OK(tarn_store_write(e, pairs[i][0], pairs[i][1], JSON("1"), NULL, NULL));
    }
    OK(tarn_bus_signal(e, 0, "b2", "k2", NULL, 0));
    OK(tarn_bus_signal(e, 0, "b1", "k1", NULL, 0));
    OK(tarn_store_remove(e, "b2", "k1", NULL, NULL));

    EXPECT_SEQ(e, exact, {"write", "b1", "k1"}, {"signal", "b1", "k1"});
    EXPECT_SEQ(e, exact2, {"write", "b1", "k1"}, {"signal", "b1", "k1"});
    EXPECT_SEQ(e, bucket_wide, {"write", "b1", "k1"}, {"write", "b1", "k2"}, {"signal", "b1", "k1"});
    EXPECT_SEQ(e, key_wide, {"write", "b1", "k1"}, {"write", "b2", "k1"}, {"signal", "b1", "k1"},
               {"remove", "b2", "k1"});
    EXPECT_SEQ(e, global, {"write", "b1", "k1"}, {"write", "b1", "k2"}, {"write", "b2", "k1"},
               {"write", "b2", "k2"}, {"signal", "b2", "k2"}, {"signal", "b1", "k1"},
               {"remove", "b2", "k1"});
    EXPECT_NONE(e, other);
    EXPECT_NONE(e, literal);
    EXPECT_STATS(e, global, 7, 0);
    EXPECT_STATS(e, other, 0, 0);

    /* A freed listener gets nothing more; the others go on. */
    OK(tarn_listener_free(e, exact));
    OK(tarn_store_write(e, "b1", "k1", JSON("2"), NULL, NULL));
    EXPECT_SEQ(e, exact2, {"write", "b1", "k1"});
    EXPECT_SEQ(e, global, {"write", "b1", "k1"});
    FAILS(TARN_NOT_FOUND, tarn_listener_free(e, exact));
    for (size_t i = 1; i < 6; i++) {
        OK(tarn_listener_free(e, ids[i]));
    }
    OK(tarn_listener_free(e, literal));
    tarn_engine_free(e);
}

static void test_change_events(void)
{
    tarn_engine *e = manual_engine();
    if (e == NULL) {
        return;
    }
    uint64_t with = SUBSCRIBE(e, "b", "*", &with_values);
    uint64_t without = SUBSCRIBE(e, "b", "*", NULL);
    char want[1024];

    /* write, with a request id and user data (compacted, key order kept). */
    const char *ud = "{ \"who\": \"test\", \"n\": [1, 2] }";
    tarn_write_options wo = {.meta = {.request_id = "req-1", .user_data = (const uint8_t *)ud,
                                      .user_data_len = strlen(ud)}};
    uint64_t v1 = SENTINEL;
    OK(tarn_store_write(e, "b", "k", JSON("{\"n\": 1}"), &wo, &v1));
    EXPECT_EVENT(e, with, event_json(want, sizeof want, "write", "b", "k", v1, T0, 0, "\"req-1\"",
                                     "{\"who\":\"test\",\"n\":[1,2]}", "{\"n\": 1}", "null", 0));
    EXPECT_EVENT(e, without, event_json(want, sizeof want, "write", "b", "k", v1, T0, 0, "\"req-1\"",
                                        "{\"who\":\"test\",\"n\":[1,2]}", "null", "null", 0));

    /* patch: the value is the patched document, ops the operations (compact). */
    OK(tarn_clock_advance(e, 1, NULL));
    tarn_patch_options po = {.meta = {.request_id = "r \"2\" \\ caf\xc3\xa9"}};
    uint64_t v2 = SENTINEL;
    OK(tarn_store_patch(e, "b", "k", JSON("[ {\"op\": \"replace\", \"path\": \"/n\", \"value\": 2} ]"), &po,
                        &v2, NULL));
    const char *ops = "[{\"op\":\"replace\",\"path\":\"/n\",\"value\":2}]";
    EXPECT_EVENT(e, with, event_json(want, sizeof want, "patch", "b", "k", v2, T0 + 1, 0,
                                     "\"r \\\"2\\\" \\\\ caf\xc3\xa9\"", "null", "{\"n\":2}", ops, 0));
    EXPECT_EVENT(e, without, event_json(want, sizeof want, "patch", "b", "k", v2, T0 + 1, 0,
                                        "\"r \\\"2\\\" \\\\ caf\xc3\xa9\"", "null", "null", ops, 0));

    /* remove: no value, even with values on. */
    OK(tarn_clock_advance(e, 1, NULL));
    tarn_remove_options ro = {.meta = {.user_data = (const uint8_t *)"\"bye\"", .user_data_len = 5}};
    uint64_t v3 = SENTINEL;
    OK(tarn_store_remove(e, "b", "k", &ro, &v3));
    EXPECT_EVENT(e, with, event_json(want, sizeof want, "remove", "b", "k", v3, T0 + 2, 0, "null",
                                     "\"bye\"", "null", "null", 0));
    EXPECT_EVENT(e, without, event_json(want, sizeof want, "remove", "b", "k", v3, T0 + 2, 0, "null",
                                        "\"bye\"", "null", "null", 0));

    /* expire: the TTL passes on the manual clock; the sweep removes it with a version. */
    tarn_write_options ttl = {.ttl_ms = 5};
    uint64_t v4 = SENTINEL;
    OK(tarn_store_write(e, "b", "t", JSON(" [0] "), &ttl, &v4));
    OK(tarn_clock_advance(e, 4, NULL));
    OK(tarn_engine_settle(e, 0));
    EXPECT_EVENT(e, with, plain_event(want, sizeof want, "write", "b", "t", v4, T0 + 2, 0, " [0] "));
    EXPECT_EVENT(e, without, plain_event(want, sizeof want, "write", "b", "t", v4, T0 + 2, 0, "null"));
    EXPECT_NONE(e, with); /* 1 ms before the deadline: nothing yet */
    OK(tarn_clock_advance(e, 1, NULL));
    OK(tarn_engine_settle(e, 0));
    uint64_t v5 = last_version(e);
    CHECK(v5 > v4);
    EXPECT_EVENT(e, with, plain_event(want, sizeof want, "expire", "b", "t", v5, T0 + 7, 0, "null"));
    EXPECT_EVENT(e, without, plain_event(want, sizeof want, "expire", "b", "t", v5, T0 + 7, 0, "null"));
    EXPECT_ABSENT(e, "b", "t");
    CHECK(clock_now(e) == T0 + 7);

    /* Versions and counters. */
    CHECK(v1 < v2 && v2 < v3 && v3 < v4);
    EXPECT_NONE(e, with);
    EXPECT_NONE(e, without);
    EXPECT_STATS(e, with, 5, 0);
    EXPECT_STATS(e, without, 5, 0);

    /* Failed changes publish nothing. */
    tarn_write_options create = {.flags = TARN_WRITE_FAIL_IF_EXISTS};
    OK(tarn_store_write(e, "b", "once", JSON("1"), &create, NULL));
    FAILS(TARN_EXISTS, tarn_store_write(e, "b", "once", JSON("2"), &create, NULL));
    FAILS(TARN_INVALID_JSON, tarn_store_write(e, "b", "once", JSON("{"), NULL, NULL));
    FAILS(TARN_PATCH_TEST_FAILED, tarn_store_patch(e, "b", "once", JSON("[{\"op\":\"test\",\"path\":\"\",\"value\":2}]"),
                                                   NULL, NULL, NULL));
    FAILS(TARN_NOT_FOUND, tarn_store_remove(e, "b", "never", NULL, NULL));
    tarn_write_options bad_meta = {.meta = {.user_data = (const uint8_t *)"{", .user_data_len = 1}};
    FAILS(TARN_INVALID_JSON, tarn_store_write(e, "b", "once", JSON("3"), &bad_meta, NULL));
    EXPECT_SEQ(e, without, {"write", "b", "once"});
    EXPECT_SEQ(e, with, {"write", "b", "once"});

    /* A value is sent as stored: a big one arrives whole. */
    char big[3000];
    big[0] = '"';
    memset(big + 1, 'x', sizeof big - 3);
    big[sizeof big - 2] = '"';
    big[sizeof big - 1] = '\0';
    OK(tarn_store_write(e, "b", "big", JSON(big), NULL, NULL));
    struct ev ev;
    if (OK(PULL(e, with, 0, &ev))) {
        CHECK(ev.len < EV_CAP && strstr(ev.s, big) != NULL);
    }
    EXPECT_SEQ(e, without, {"write", "b", "big"});

    OK(tarn_listener_free(e, with));
    OK(tarn_listener_free(e, without));
    tarn_engine_free(e);
}

static void test_signals(void)
{
    tarn_engine *e = manual_engine();
    if (e == NULL) {
        return;
    }
    uint64_t l = SUBSCRIBE(e, "chat", "*", &with_values);
    uint64_t plain = SUBSCRIBE(e, "chat", "room1", NULL);
    char want[1024];

    OK(tarn_bus_signal(e, 0, "chat", "room1", JSON("{\"text\": \"hi\"}")));
    EXPECT_EVENT(e, l, plain_event(want, sizeof want, "signal", "chat", "room1", 0, T0, 0, "{\"text\": \"hi\"}"));
    EXPECT_EVENT(e, plain, plain_event(want, sizeof want, "signal", "chat", "room1", 0, T0, 0, "null"));
    /* NULL: a signal without a value (the length is ignored). */
    OK(tarn_bus_signal(e, 0, "chat", "room2", NULL, 7));
    EXPECT_EVENT(e, l, plain_event(want, sizeof want, "signal", "chat", "room2", 0, T0, 0, "null"));
    /* As a session: the event names it. */
    uint64_t s = OPEN_SESSION(e, "sender", 0);
    OK(tarn_bus_signal(e, s, "chat", "room1", JSON("[1]")));
    EXPECT_EVENT(e, l, plain_event(want, sizeof want, "signal", "chat", "room1", 0, T0, s, "[1]"));
    EXPECT_EVENT(e, plain, plain_event(want, sizeof want, "signal", "chat", "room1", 0, T0, s, "null"));

    /* Never stored: nothing to read, no version taken, no bucket made. */
    EXPECT_ABSENT(e, "chat", "room1");
    EXPECT_ABSENT(e, "chat", "room2");
    CHECK(last_version(e) == 0);
    tarn_buf b;
    POISON(b);
    if (OK(tarn_store_buckets(e, &b))) {
        CHECK(b.len == 2 && memcmp(b.data, "[]", 2) == 0);
        tarn_buf_free(&b);
    }

    /* Refused signals reach nobody. */
    FAILS(TARN_INVALID_JSON, tarn_bus_signal(e, 0, "chat", "room1", JSON("{bad")));
    FAILS(TARN_INVALID_JSON, tarn_bus_signal(e, 0, "chat", "room1", JSON("")));
    FAILS(TARN_INVALID_JSON, tarn_bus_signal(e, 0, "chat", "room1", JSON("1 2")));
    FAILS(TARN_INVALID_JSON, tarn_bus_signal(e, 0, "chat", "room1", JSON("\"\xff\"")));
    FAILS(TARN_INVALID_ARGUMENT, tarn_bus_signal(e, 0, "$sessions", "room1", NULL, 0));
    FAILS(TARN_INVALID_ARGUMENT, tarn_bus_signal(e, 0, "*", "room1", NULL, 0));
    FAILS(TARN_INVALID_ARGUMENT, tarn_bus_signal(e, 0, "chat", "*", NULL, 0));
    FAILS(TARN_INVALID_ARGUMENT, tarn_bus_signal(e, 0, "", "room1", NULL, 0));
    FAILS(TARN_INVALID_ARGUMENT, tarn_bus_signal(e, 0, "chat", "", NULL, 0));
    FAILS(TARN_INVALID_UTF8, tarn_bus_signal(e, 0, "chat", "\xff", NULL, 0));
    FAILS_NULL("bucket", tarn_bus_signal(e, 0, NULL, "room1", NULL, 0));
    FAILS_NULL("key", tarn_bus_signal(e, 0, "chat", NULL, NULL, 0));
    FAILS_NULL("engine", tarn_bus_signal(NULL, 0, "chat", "room1", NULL, 0));
    FAILS(TARN_NOT_FOUND, tarn_bus_signal(e, 987654, "chat", "room1", NULL, 0));
    EXPECT_NONE(e, l);
    EXPECT_NONE(e, plain);

    /* Signals from one thread arrive in the order it sent them. */
    for (int i = 0; i < 50; i++) {
        char v[32];
        snprintf(v, sizeof v, "{\"i\":%d}", i);
        OK(tarn_bus_signal(e, 0, "chat", i % 2 ? "room1" : "room2", JSON(v)));
    }
    int in_order = 0;
    for (int i = 0; i < 50; i++) {
        struct ev ev;
        char v[48];
        snprintf(v, sizeof v, ",\"value\":{\"i\":%d},", i);
        if (PULL(e, l, 0, &ev) == TARN_OK && strstr(ev.s, v) != NULL) {
            in_order++;
        }
    }
    CHECK(in_order == 50);
    EXPECT_NONE(e, l);
    OK(tarn_listener_free(e, l));
    OK(tarn_listener_free(e, plain));
    OK(tarn_session_close(e, s));
    tarn_engine_free(e);
}

/* ------------------------------------------------------------------------------------
 * Callback listeners.
 * ---------------------------------------------------------------------------------- */

struct counter {
    pthread_mutex_t mu;
    const tarn_engine *engine;
    int events;
    int reads_ok;          /* the callback read the written document back */
    int settle_refused;    /* tarn_engine_settle inside a callback: TARN_NOT_SUPPORTED */
    int writes_ok;         /* the callback wrote into the engine */
    int in_order;          /* keys arrived k0, k1, ... */
    int bad_json;          /* events that did not look like write events */
    uint64_t free_self;    /* if not 0: the callback frees this listener (its own) */
    tarn_status free_status;
};

static void on_event(const uint8_t *event, size_t len, void *user_data)
{
    struct counter *c = user_data;
    char s[EV_CAP];
    size_t n = len < sizeof s - 1 ? len : sizeof s - 1;
    memcpy(s, event, n);
    s[n] = '\0';

    pthread_mutex_lock(&c->mu);
    int index = c->events++;
    uint64_t free_self = c->free_self;
    pthread_mutex_unlock(&c->mu);

    /* The key is "k<index>"; read it back, copy it to "out", and try to settle. */
    char key[32];
    snprintf(key, sizeof key, "k%d", index);
    bool order = ev_is(s, "write", "cb", key) || ev_is(s, "write", "self", key);
    char value[64];
    snprintf(value, sizeof value, ",\"value\":{\"i\":%d},", index);
    bool looks_right = strstr(s, value) != NULL && ev_missed(s) == 0;
    tarn_buf b = {NULL, 0, NULL};
    bool read_ok = tarn_store_read(c->engine, "cb", key, &b, NULL) == TARN_OK && b.len > 0;
    tarn_buf_free(&b);
    bool write_ok = tarn_store_write(c->engine, "out", key, JSON("true"), NULL, NULL) == TARN_OK;
    bool refused = tarn_engine_settle(c->engine, 0) == TARN_NOT_SUPPORTED;
    tarn_status fs = TARN_OK;
    if (free_self != 0) {
        fs = tarn_listener_free(c->engine, free_self);
    }

    pthread_mutex_lock(&c->mu);
    c->in_order += order;
    c->bad_json += !looks_right;
    c->reads_ok += read_ok;
    c->writes_ok += write_ok;
    c->settle_refused += refused;
    if (free_self != 0) {
        c->free_status = fs;
    }
    pthread_mutex_unlock(&c->mu);
}

static void counter_init(struct counter *c, const tarn_engine *e)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    c->engine = e;
    c->free_status = TARN_PANIC;
}

static struct counter counter_get(struct counter *c)
{
    pthread_mutex_lock(&c->mu);
    struct counter copy = *c;
    pthread_mutex_unlock(&c->mu);
    return copy;
}

static void test_callbacks(void)
{
    tarn_engine *e = manual_engine();
    if (e == NULL) {
        return;
    }
    struct counter c;
    counter_init(&c, e);
    uint64_t l = 0;
    OK(tarn_bus_listen(e, 0, "cb", "*", &with_values, on_event, &c, &l));
    CHECK(l != 0);
    enum { N = 20 };
    for (int i = 0; i < N; i++) {
        char key[16], v[32];
        snprintf(key, sizeof key, "k%d", i);
        snprintf(v, sizeof v, "{\"i\":%d}", i);
        OK(tarn_store_write(e, "cb", key, JSON(v), NULL, NULL));
    }
    /* settle waits until every callback has run (and what they started). */
    OK(tarn_engine_settle(e, 0));
    struct counter got = counter_get(&c);
    CHECK(got.events == N);
    CHECK(got.in_order == N); /* one listener's callbacks run one at a time, in order */
    CHECK(got.bad_json == 0);
    CHECK(got.reads_ok == N);
    CHECK(got.writes_ok == N);
    CHECK(got.settle_refused == N);
    tarn_buf b;
    POISON(b);
    if (OK(tarn_store_list(e, "out", TARN_LIST_KEYS_ONLY, &b))) {
        CHECK(b.len > 2 && memcmp(b.data, "[\"k0\",\"k1\",", 11) == 0);
        tarn_buf_free(&b);
    }
    EXPECT_STATS(e, l, N, 0);

    /* A callback listener cannot be pulled and has no fd. */
    struct ev ev;
    FAILS(TARN_NOT_SUPPORTED, PULL(e, l, 0, &ev));
    FAILS(TARN_NOT_SUPPORTED, PULL(e, l, 10, &ev));
    int32_t fd = 12345;
    FAILS(TARN_NOT_SUPPORTED, tarn_listener_fd(e, l, &fd));
    CHECK(fd == 12345);

    /* Freed: no more calls. */
    OK(tarn_listener_free(e, l));
    OK(tarn_store_write(e, "cb", "k0", JSON("{\"i\":99}"), NULL, NULL));
    OK(tarn_engine_settle(e, 0));
    CHECK(counter_get(&c).events == N);
    FAILS(TARN_NOT_FOUND, tarn_listener_get_stats(e, l, &(tarn_listener_stats){0, 0, 0}));
    pthread_mutex_destroy(&c.mu);

    /* A callback may free its own listener (it does not wait for itself); the events
     * queued behind that one are not delivered. */
    struct counter self;
    counter_init(&self, e);
    uint64_t ls = 0;
    OK(tarn_bus_listen(e, 0, "self", "*", &with_values, on_event, &self, &ls));
    pthread_mutex_lock(&self.mu);
    self.free_self = ls;
    pthread_mutex_unlock(&self.mu);
    for (int i = 0; i < 3; i++) {
        char key[16], v[32];
        snprintf(key, sizeof key, "k%d", i);
        snprintf(v, sizeof v, "{\"i\":%d}", i);
        OK(tarn_store_write(e, "self", key, JSON(v), NULL, NULL));
    }
    OK(tarn_engine_settle(e, 0));
    got = counter_get(&self);
    CHECK(got.events == 1);
    CHECK(got.free_status == TARN_OK);
    FAILS(TARN_NOT_FOUND, tarn_listener_free(e, ls));
    pthread_mutex_destroy(&self.mu);

    tarn_engine_free(e);
}

/* ------------------------------------------------------------------------------------
 * Per-key order: two threads write one key.
 * ---------------------------------------------------------------------------------- */

#define ORDER_ROUNDS 300

struct order_writer {
    const tarn_engine *engine;
    pthread_barrier_t *start;
    int index;
    int failures;
};

static void *order_write(void *arg)
{
    struct order_writer *w = arg;
    pthread_barrier_wait(w->start);
    for (int n = 0; n < ORDER_ROUNDS; n++) {
        char v[48];
        snprintf(v, sizeof v, "{\"t\":%d,\"n\":%d}", w->index, n);
        if (tarn_store_write(w->engine, "order", "k", JSON(v), NULL, NULL) != TARN_OK) {
            w->failures++;
        }
    }
    return NULL;
}

struct version_log {
    pthread_mutex_t mu;
    uint64_t versions[2 * ORDER_ROUNDS + 8];
    int n;
};

static void log_version(const uint8_t *event, size_t len, void *user_data)
{
    struct version_log *vl = user_data;
    char s[256];
    size_t n = len < sizeof s - 1 ? len : sizeof s - 1;
    memcpy(s, event, n);
    s[n] = '\0';
    uint64_t v = ev_u64(s, "version");
    pthread_mutex_lock(&vl->mu);
    if (vl->n < (int)(sizeof vl->versions / sizeof vl->versions[0])) {
        vl->versions[vl->n] = v;
    }
    vl->n++;
    pthread_mutex_unlock(&vl->mu);
}

static void test_per_key_order(void)
{
    tarn_engine *e = manual_engine();
    if (e == NULL) {
        return;
    }
    tarn_listen_options o = {.flags = TARN_LISTEN_SEND_VALUES, .capacity = 4 * ORDER_ROUNDS};
    uint64_t l = SUBSCRIBE(e, "order", "k", &o);
    static struct version_log vl;
    pthread_mutex_init(&vl.mu, NULL);
    vl.n = 0;
    uint64_t cl = 0;
    tarn_listen_options co = {.capacity = 4 * ORDER_ROUNDS};
    OK(tarn_bus_listen(e, 0, "order", "*", &co, log_version, &vl, &cl));

    pthread_barrier_t start;
    if (!CHECK(pthread_barrier_init(&start, NULL, 2) == 0)) {
        tarn_engine_free(e);
        return;
    }
    struct order_writer w[2] = {{e, &start, 0, 0}, {e, &start, 1, 0}};
    pthread_t t[2];
    if (!CHECK(pthread_create(&t[0], NULL, order_write, &w[0]) == 0) ||
        !CHECK(pthread_create(&t[1], NULL, order_write, &w[1]) == 0)) {
        fprintf(stdout, "cannot start the writer threads\n");
        exit(2);
    }
    CHECK(pthread_join(t[0], NULL) == 0);
    CHECK(pthread_join(t[1], NULL) == 0);
    pthread_barrier_destroy(&start);
    CHECK(w[0].failures == 0 && w[1].failures == 0);
    OK(tarn_engine_settle(e, 0));

    /* The pull listener: every write, versions strictly increasing in delivery order,
     * and each thread's writes in the order it made them. */
    uint64_t prev = 0;
    int increasing = 0, got = 0;
    int next_n[2] = {0, 0};
    int thread_order = 0;
    struct ev ev;
    while (PULL(e, l, 0, &ev) == TARN_OK) {
        got++;
        uint64_t v = ev_u64(ev.s, "version");
        if (v != UINT64_MAX && v > prev) {
            increasing++;
        }
        prev = v;
        const char *val = strstr(ev.s, ",\"value\":{\"t\":");
        if (val != NULL) {
            int t_ = -1, n_ = -1;
            if (sscanf(val, ",\"value\":{\"t\":%d,\"n\":%d}", &t_, &n_) == 2 && (t_ == 0 || t_ == 1) &&
                n_ == next_n[t_]) {
                next_n[t_]++;
                thread_order++;
            }
        }
    }
    CHECK(got == 2 * ORDER_ROUNDS);
    if (!CHECK(increasing == got)) {
        fprintf(stdout, "    %d of %d events had a version above the one before\n", increasing, got);
    }
    CHECK(thread_order == 2 * ORDER_ROUNDS);
    CHECK(prev == last_version(e));
    EXPECT_STATS(e, l, 2 * ORDER_ROUNDS, 0);

    /* The callback listener saw the same, in the same order. */
    pthread_mutex_lock(&vl.mu);
    int cn = vl.n;
    int cinc = 0;
    for (int i = 0; i < cn && i < (int)(sizeof vl.versions / sizeof vl.versions[0]); i++) {
        cinc += i == 0 || vl.versions[i] > vl.versions[i - 1];
    }
    pthread_mutex_unlock(&vl.mu);
    CHECK(cn == 2 * ORDER_ROUNDS);
    CHECK(cinc == cn);
    OK(tarn_listener_free(e, l));
    OK(tarn_listener_free(e, cl));
    pthread_mutex_destroy(&vl.mu);
    tarn_engine_free(e);
}

/* ------------------------------------------------------------------------------------
 * Watching from a version.
 * ---------------------------------------------------------------------------------- */

static void test_from_version(void)
{
    tarn_engine *e = engine_with_log(4);
    if (e == NULL) {
        return;
    }
    /* Versions 1..10, alternating between two buckets: odd in "h", even in "x". */
    for (int i = 1; i <= 10; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        uint64_t v = SENTINEL;
        OK(tarn_store_write(e, i % 2 ? "h" : "x", key, JSON("1"), NULL, &v));
        CHECK(v == (uint64_t)i);
    }
    /* The log keeps the last 4 changes (7..10): starting after 6 is the oldest start. */
    static const uint64_t too_old[] = {0, 1, 5};
    for (size_t i = 0; i < 3; i++) {
        tarn_listen_options o = {.flags = TARN_LISTEN_FROM_VERSION, .from_version = too_old[i]};
        uint64_t id = SENTINEL;
        FAILS(TARN_TOO_OLD, tarn_bus_subscribe(e, 0, "*", "*", &o, &id));
        FAILS(TARN_TOO_OLD, tarn_bus_subscribe(e, 0, "h", "*", &o, &id));
        FAILS(TARN_TOO_OLD, tarn_bus_listen(e, 0, "h", "*", &o, on_event, NULL, &id));
        CHECK(id == SENTINEL);
    }
    CHECK(strstr(tarn_last_error(), "too old") != NULL);

    tarn_listen_options from6 = {.flags = TARN_LISTEN_FROM_VERSION, .from_version = 6};
    uint64_t all = SUBSCRIBE(e, "*", "*", &from6);
    uint64_t h = SUBSCRIBE(e, "h", "*", &from6);
    uint64_t x9 = SUBSCRIBE(e, "x", "*", &(tarn_listen_options){.flags = TARN_LISTEN_FROM_VERSION, .from_version = 9});
    uint64_t now = SUBSCRIBE(e, "*", "*", &(tarn_listen_options){.flags = TARN_LISTEN_FROM_VERSION, .from_version = 10});
    uint64_t ahead = SUBSCRIBE(e, "*", "*", &(tarn_listen_options){.flags = TARN_LISTEN_FROM_VERSION, .from_version = 1000});
    /* Without the flag, from_version is ignored. */
    uint64_t live = SUBSCRIBE(e, "*", "*", &(tarn_listen_options){.from_version = 1});

    OK(tarn_store_write(e, "h", "k11", JSON("1"), NULL, NULL)); /* version 11 */
    EXPECT_SEQ(e, all, {"write", "h", "k7"}, {"write", "x", "k8"}, {"write", "h", "k9"},
               {"write", "x", "k10"}, {"write", "h", "k11"});
    EXPECT_SEQ(e, h, {"write", "h", "k7"}, {"write", "h", "k9"}, {"write", "h", "k11"});
    EXPECT_SEQ(e, x9, {"write", "x", "k10"});
    EXPECT_SEQ(e, now, {"write", "h", "k11"});
    EXPECT_SEQ(e, ahead, {"write", "h", "k11"});
    EXPECT_SEQ(e, live, {"write", "h", "k11"});
    /* The replayed events are the original ones, version and all. */
    struct ev ev;
    uint64_t again = SUBSCRIBE(e, "h", "*", &(tarn_listen_options){.flags = TARN_LISTEN_FROM_VERSION, .from_version = 8});
    if (OK(PULL(e, again, 0, &ev))) {
        char want[512];
        CHECK(strcmp(ev.s, plain_event(want, sizeof want, "write", "h", "k9", 9, T0, 0, "null")) == 0);
    }
    uint64_t ids[] = {all, h, x9, now, ahead, live, again};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        OK(tarn_listener_free(e, ids[i]));
    }
    tarn_engine_free(e);

    /* The default log: from version 0 replays every change (not signals or presence). */
    e = manual_engine();
    if (e == NULL) {
        return;
    }
    tarn_listen_options from0 = {.flags = TARN_LISTEN_FROM_VERSION | TARN_LISTEN_SEND_VALUES};
    uint64_t empty = SUBSCRIBE(e, "*", "*", &from0);
    EXPECT_NONE(e, empty);
    uint64_t s = OPEN_SESSION(e, "replay", 0);
    OK(tarn_store_write(e, "r", "a", JSON("1"), NULL, NULL));
    OK(tarn_bus_signal(e, 0, "r", "a", NULL, 0));
    OK(tarn_store_patch(e, "r", "a", JSON("[]"), NULL, NULL, NULL));
    OK(tarn_store_remove(e, "r", "a", NULL, NULL));
    OK(write_owned(e, s, "r", "b", "2", NULL));
    OK(tarn_session_close(e, s));
    uint64_t late = SUBSCRIBE(e, "*", "*", &from0);
    EXPECT_SEQ(e, late, {"write", "r", "a"}, {"patch", "r", "a"}, {"remove", "r", "a"},
               {"write", "r", "b"}, {"session_expire", "r", "b"});
    EXPECT_NONE(e, late);
    OK(tarn_listener_free(e, late));
    OK(tarn_listener_free(e, empty));
    tarn_engine_free(e);

    /* A log of 0 keeps nothing: only "from now" is possible. */
    e = engine_with_log(0);
    if (e == NULL) {
        return;
    }
    OK(tarn_store_write(e, "z", "a", JSON("1"), NULL, NULL));
    OK(tarn_store_write(e, "z", "b", JSON("1"), NULL, NULL));
    uint64_t id = SENTINEL;
    FAILS(TARN_TOO_OLD, tarn_bus_subscribe(e, 0, "*", "*", &(tarn_listen_options){.flags = TARN_LISTEN_FROM_VERSION, .from_version = 1}, &id));
    CHECK(id == SENTINEL);
    uint64_t z = SUBSCRIBE(e, "*", "*", &(tarn_listen_options){.flags = TARN_LISTEN_FROM_VERSION, .from_version = 2});
    EXPECT_NONE(e, z);
    OK(tarn_store_write(e, "z", "c", JSON("1"), NULL, NULL));
    EXPECT_SEQ(e, z, {"write", "z", "c"});
    OK(tarn_listener_free(e, z));
    tarn_engine_free(e);
}

/* ------------------------------------------------------------------------------------
 * Sessions: owned keys, presence, session listeners.
 * ---------------------------------------------------------------------------------- */

static const char *presence_json(char *dst, size_t cap, const char *kind, uint64_t s,
                                 uint64_t ts, const char *client_json /* NULL: no value */)
{
    char key[32], value[512];
    snprintf(key, sizeof key, "%" PRIu64, s);
    if (client_json != NULL) {
        snprintf(value, sizeof value, "{\"session\":%" PRIu64 ",\"client_id\":%s}", s, client_json);
    } else {
        snprintf(value, sizeof value, "null");
    }
    return plain_event(dst, cap, kind, "$sessions", key, 0, ts, s, value);
}

static void test_sessions(void)
{
    tarn_engine *e = manual_engine();
    if (e == NULL) {
        return;
    }
    char want[1024];
    uint64_t pres = SUBSCRIBE(e, "$sessions", "*", &with_values);
    uint64_t pres_plain = SUBSCRIBE(e, "$sessions", "*", NULL);
    uint64_t data = SUBSCRIBE(e, "s", "*", NULL);
    uint64_t all = SUBSCRIBE(e, "*", "*", NULL);

    /* Opening publishes session_open on "$sessions", key = the id in decimal. */
    uint64_t s1 = OPEN_SESSION(e, "alice", 0);
    EXPECT_EVENT(e, pres, presence_json(want, sizeof want, "session_open", s1, T0, "\"alice\""));
    EXPECT_EVENT(e, pres_plain, presence_json(want, sizeof want, "session_open", s1, T0, NULL));
    OK(tarn_clock_advance(e, 10, NULL));
    uint64_t s2 = OPEN_SESSION(e, "bob \"the\" builder", 0);
    CHECK(s2 != s1);
    EXPECT_EVENT(e, pres, presence_json(want, sizeof want, "session_open", s2, T0 + 10,
                                        "\"bob \\\"the\\\" builder\""));
    EXPECT_SEQ(e, pres_plain, {"session_open", "$sessions", "2"});
    /* The global pattern sees presence too. */
    EXPECT_SEQ(e, all, {"session_open", "$sessions", "1"}, {"session_open", "$sessions", "2"});
    CHECK(s1 == 1 && s2 == 2); /* src/session.rs: ids are 1, 2, ... */
    EXPECT_NONE(e, data);
    CHECK(IS_OPEN(e, s1));
    OK(tarn_session_keepalive(e, s1)); /* no lease: harmless */

    /* Exact presence listener for s1 only. */
    char s1key[32];
    snprintf(s1key, sizeof s1key, "%" PRIu64, s1);
    uint64_t pres_s1 = SUBSCRIBE(e, "$sessions", s1key, NULL);

    /* Session listeners: one sees its own session's changes, one ignores them. */
    uint64_t mine = subscribe_at(e, s1, "s", "*", NULL, __FILE__, __LINE__);
    uint64_t others = subscribe_at(e, s1, "s", "*", &(tarn_listen_options){.flags = TARN_LISTEN_IGNORE_OWN},
                                   __FILE__, __LINE__);
    /* IGNORE_OWN without a session skips nothing. */
    uint64_t nobody = SUBSCRIBE(e, "s", "*", &(tarn_listen_options){.flags = TARN_LISTEN_IGNORE_OWN});

    /* s1 owns a, b, c and e; c is rewritten plainly (permanent again), b is taken over
     * by s2; a is patched (a patch keeps the owner). */
    uint64_t va = 0, vb = 0, vc = 0, ve = 0;
    OK(write_owned(e, s1, "s", "a", "\"a1\"", &va));
    EXPECT_EVENT(e, data, plain_event(want, sizeof want, "write", "s", "a", va, T0 + 10, s1, "null"));
    OK(write_owned(e, s1, "s", "b", "\"b1\"", &vb));
    OK(write_owned(e, s1, "s", "c", "\"c1\"", &vc));
    OK(write_owned(e, s1, "s", "e", "\"e1\"", &ve));
    OK(tarn_store_write(e, "s", "c", JSON("\"c-permanent\""), NULL, NULL));
    OK(write_owned(e, s2, "s", "b", "\"b2\"", NULL));
    tarn_patch_options p1 = {.meta = {.session = s2}};
    OK(tarn_store_patch(e, "s", "a", JSON("[{\"op\":\"replace\",\"path\":\"\",\"value\":\"a2\"}]"), &p1, NULL, NULL));
    OK(tarn_bus_signal(e, s1, "s", "sig", NULL, 0));
    OK(tarn_bus_signal(e, s2, "s", "sig", NULL, 0));
    EXPECT_SEQ(e, data, {"write", "s", "b"}, {"write", "s", "c"}, {"write", "s", "e"},
               {"write", "s", "c"}, {"write", "s", "b"}, {"patch", "s", "a"}, {"signal", "s", "sig"},
               {"signal", "s", "sig"});
    EXPECT_SEQ(e, mine, {"write", "s", "a"}, {"write", "s", "b"}, {"write", "s", "c"},
               {"write", "s", "e"}, {"write", "s", "c"}, {"write", "s", "b"}, {"patch", "s", "a"},
               {"signal", "s", "sig"}, {"signal", "s", "sig"});
    /* IGNORE_OWN: only the changes not made as s1 (the plain write, s2's write and
     * patch, s2's signal). */
    EXPECT_SEQ(e, others, {"write", "s", "c"}, {"write", "s", "b"}, {"patch", "s", "a"},
               {"signal", "s", "sig"});
    EXPECT_SEQ(e, nobody, {"write", "s", "a"}, {"write", "s", "b"}, {"write", "s", "c"},
               {"write", "s", "e"}, {"write", "s", "c"}, {"write", "s", "b"}, {"patch", "s", "a"},
               {"signal", "s", "sig"}, {"signal", "s", "sig"});
    EXPECT_STATS(e, nobody, 9, 0);
    EXPECT_STATS(e, others, 4, 0);
    /* A fresh global listener for the close below. */
    OK(tarn_listener_free(e, all));
    all = SUBSCRIBE(e, "*", "*", NULL);

    /* Closing s1: its listeners stop, its keys (a, e) go with session_expire events,
     * then session_close. b (now s2's) and c (permanent) stay. */
    OK(tarn_clock_advance(e, 5, NULL));
    uint64_t before = last_version(e);
    OK(tarn_session_close(e, s1));
    uint64_t after = last_version(e);
    CHECK(after == before + 2); /* two removals, one version each */
    struct ev ev1, ev2;
    bool got1 = OK(PULL(e, data, 0, &ev1));
    bool got2 = OK(PULL(e, data, 0, &ev2));
    if (got1 && got2) {
        /* The keys are removed in no particular order. */
        bool a_first = ev_is(ev1.s, "session_expire", "s", "a");
        struct ev *ea = a_first ? &ev1 : &ev2;
        struct ev *ee = a_first ? &ev2 : &ev1;
        CHECK(ev_is(ea->s, "session_expire", "s", "a"));
        CHECK(ev_is(ee->s, "session_expire", "s", "e"));
        uint64_t x = ev_u64(ea->s, "version"), y = ev_u64(ee->s, "version");
        CHECK(x != y && x > before && x <= after && y > before && y <= after);
        CHECK(strcmp(ea->s, plain_event(want, sizeof want, "session_expire", "s", "a", x, T0 + 15, s1, "null")) == 0);
        CHECK(strcmp(ee->s, plain_event(want, sizeof want, "session_expire", "s", "e", y, T0 + 15, s1, "null")) == 0);
    }
    EXPECT_NONE(e, data);
    EXPECT_EVENT(e, pres, presence_json(want, sizeof want, "session_close", s1, T0 + 15, "\"alice\""));
    EXPECT_EVENT(e, pres_s1, presence_json(want, sizeof want, "session_close", s1, T0 + 15, NULL));
    /* In one listener, the keys' events come before the session's close. */
    struct ev e1, e2, e3;
    if (OK(PULL(e, all, 0, &e1)) && OK(PULL(e, all, 0, &e2)) && OK(PULL(e, all, 0, &e3))) {
        CHECK(strncmp(e1.s, "{\"kind\":\"session_expire\"", 24) == 0);
        CHECK(strncmp(e2.s, "{\"kind\":\"session_expire\"", 24) == 0);
        CHECK(ev_is(e3.s, "session_close", "$sessions", s1key));
    }
    EXPECT_NONE(e, all);
    EXPECT_ABSENT(e, "s", "a");
    EXPECT_ABSENT(e, "s", "e");
    EXPECT_DOC(e, "s", "b", "\"b2\"");
    EXPECT_DOC(e, "s", "c", "\"c-permanent\"");

    /* s1's listeners closed with it: TARN_CLOSED, and their ids still need freeing. */
    struct ev ev;
    FAILS(TARN_CLOSED, PULL(e, mine, 0, &ev));
    FAILS(TARN_CLOSED, PULL(e, others, 10, &ev));
    int32_t fd = 12345;
    FAILS(TARN_CLOSED, tarn_listener_fd(e, mine, &fd));
    CHECK(fd == 12345);
    OK(tarn_listener_free(e, mine));
    OK(tarn_listener_free(e, others));

    /* The closed id is released: TARN_NOT_FOUND everywhere, nothing written. */
    bool open = true;
    uint64_t id = SENTINEL, v = SENTINEL;
    POISON(open);
    FAILS(TARN_NOT_FOUND, tarn_session_is_open(e, s1, &open));
    CHECK(POISONED(open));
    FAILS(TARN_NOT_FOUND, tarn_session_keepalive(e, s1));
    FAILS(TARN_NOT_FOUND, tarn_session_close(e, s1));
    FAILS(TARN_NOT_FOUND, tarn_bus_subscribe(e, s1, "s", "*", NULL, &id));
    FAILS(TARN_NOT_FOUND, tarn_bus_listen(e, s1, "s", "*", NULL, on_event, NULL, &id));
    FAILS(TARN_NOT_FOUND, tarn_bus_signal(e, s1, "s", "k", NULL, 0));
    FAILS(TARN_NOT_FOUND, write_owned(e, s1, "s", "late", "1", &v));
    FAILS(TARN_NOT_FOUND, write_owned(e, s1, "s", "b", "1", &v));
    CHECK(id == SENTINEL && v == SENTINEL);
    EXPECT_ABSENT(e, "s", "late");
    EXPECT_DOC(e, "s", "b", "\"b2\"");
    CHECK(last_version(e) == after);
    EXPECT_NONE(e, data);

    /* Closing s2 removes b. */
    OK(tarn_session_close(e, s2));
    EXPECT_SEQ(e, data, {"session_expire", "s", "b"});
    EXPECT_EVENT(e, pres, presence_json(want, sizeof want, "session_close", s2, T0 + 15,
                                        "\"bob \\\"the\\\" builder\""));
    EXPECT_ABSENT(e, "s", "b");
    EXPECT_NONE(e, pres_s1);

    /* Client ids: 1..=256 bytes of UTF-8 without control characters. */
    char id256[258];
    memset(id256, 'c', 257);
    id256[257] = '\0';
    uint64_t s = SENTINEL;
    FAILS(TARN_INVALID_ARGUMENT, tarn_session_open(e, id256, 0, &s)); /* 257 bytes */
    FAILS(TARN_INVALID_ARGUMENT, tarn_session_open(e, "", 0, &s));
    FAILS(TARN_INVALID_ARGUMENT, tarn_session_open(e, "a\nb", 0, &s));
    FAILS(TARN_INVALID_ARGUMENT, tarn_session_open(e, "tab\t", 0, &s));
    FAILS(TARN_INVALID_UTF8, tarn_session_open(e, "\xff", 0, &s));
    FAILS_NULL("client_id", tarn_session_open(e, NULL, 0, &s));
    FAILS_NULL("out_session", tarn_session_open(e, "ok", 0, NULL));
    FAILS_NULL("engine", tarn_session_open(NULL, "ok", 0, &s));
    CHECK(s == SENTINEL);
    EXPECT_NONE(e, pres); /* refused opens publish nothing */
    id256[256] = '\0';
    uint64_t s3 = OPEN_SESSION(e, id256, 0); /* 256 bytes: at the bound */
    uint64_t s4 = OPEN_SESSION(e, "caf\xc3\xa9", 0);
    CHECK(s3 > s2 && s4 > s3);
    struct ev pe;
    char s3key[32];
    snprintf(s3key, sizeof s3key, "%" PRIu64, s3);
    if (OK(PULL(e, pres, 0, &pe))) {
        CHECK(ev_is(pe.s, "session_open", "$sessions", s3key) && strstr(pe.s, id256) != NULL);
    }
    EXPECT_EVENT(e, pres, presence_json(want, sizeof want, "session_open", s4, T0 + 15, "\"caf\xc3\xa9\""));
    OK(tarn_session_close(e, s3));
    OK(tarn_session_close(e, s4));

    uint64_t ids[] = {pres, pres_plain, data, all, pres_s1, nobody};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        OK(tarn_listener_free(e, ids[i]));
    }
    /* A session still open when the engine is freed is closed with it (LeakSanitizer
     * checks that nothing is left). */
    uint64_t left = OPEN_SESSION(e, "left open", 0);
    OK(write_owned(e, left, "s", "left", "1", NULL));
    uint64_t left_l = subscribe_at(e, left, "s", "*", NULL, __FILE__, __LINE__);
    (void)left_l;
    tarn_engine_free(e);
}

/* ------------------------------------------------------------------------------------
 * Leases on the manual clock.
 * ---------------------------------------------------------------------------------- */

static void test_leases(void)
{
    tarn_engine *e = manual_engine();
    if (e == NULL) {
        return;
    }
    char want[1024];
    uint64_t pres = SUBSCRIBE(e, "$sessions", "*", NULL);
    uint64_t data = SUBSCRIBE(e, "l", "*", NULL);
    uint64_t s = OPEN_SESSION(e, "leased", 1000);
    uint64_t forever = OPEN_SESSION(e, "no lease", 0);
    EXPECT_SEQ(e, pres, {"session_open", "$sessions", "1"}, {"session_open", "$sessions", "2"});
    uint64_t vk = 0;
    OK(write_owned(e, s, "l", "k", "1", &vk));
    uint64_t sl = subscribe_at(e, s, "l", "*", NULL, __FILE__, __LINE__);
    EXPECT_SEQ(e, data, {"write", "l", "k"});

    /* 999 ms in: open. */
    OK(tarn_clock_advance(e, 999, NULL));
    OK(tarn_engine_settle(e, 0));
    CHECK(IS_OPEN(e, s));
    /* Kept alive at 999: the lease now ends at 1999. */
    OK(tarn_session_keepalive(e, s));
    OK(tarn_clock_advance(e, 999, NULL)); /* 1998: past the first deadline */
    OK(tarn_engine_settle(e, 0));
    CHECK(IS_OPEN(e, s));
    EXPECT_DOC(e, "l", "k", "1");
    EXPECT_NONE(e, pres);
    EXPECT_NONE(e, data);
    /* 1000 more without a keepalive: closed by the lease. */
    OK(tarn_clock_advance(e, 1000, NULL)); /* 2998 */
    OK(tarn_engine_settle(e, 0));
    /* The header: tarn_session_is_open writes 0 for a session its lease closed (the id
     * stays held until tarn_session_close). */
    bool open = true;
    OK(tarn_session_is_open(e, s, &open));
    CHECK(!open);
    EXPECT_ABSENT(e, "l", "k");
    uint64_t vx = last_version(e);
    CHECK(vx > vk);
    EXPECT_EVENT(e, data, plain_event(want, sizeof want, "session_expire", "l", "k", vx, T0 + 2998, s, "null"));
    EXPECT_EVENT(e, pres, presence_json(want, sizeof want, "session_close", s, T0 + 2998, NULL));
    /* Its listener closed with it. */
    struct ev ev;
    FAILS(TARN_CLOSED, PULL(e, sl, 0, &ev));
    /* What the lease-closed (but not yet released) id does: keepalive, signals and new
     * listeners say TARN_CLOSED; owning a key looks the session up among the open
     * ones: TARN_NOT_FOUND. */
    FAILS(TARN_CLOSED, tarn_session_keepalive(e, s));
    FAILS(TARN_CLOSED, tarn_bus_signal(e, s, "l", "k", NULL, 0));
    uint64_t id = SENTINEL, v = SENTINEL;
    FAILS(TARN_CLOSED, tarn_bus_subscribe(e, s, "l", "*", NULL, &id));
    FAILS(TARN_CLOSED, tarn_bus_listen(e, s, "l", "*", NULL, on_event, NULL, &id));
    FAILS(TARN_NOT_FOUND, write_owned(e, s, "l", "k", "2", &v));
    CHECK(id == SENTINEL && v == SENTINEL);
    EXPECT_ABSENT(e, "l", "k");
    EXPECT_NONE(e, data);
    /* Releasing it: no second session_close; afterwards TARN_NOT_FOUND. */
    OK(tarn_session_close(e, s));
    EXPECT_NONE(e, pres);
    FAILS(TARN_NOT_FOUND, tarn_session_is_open(e, s, &open));
    FAILS(TARN_NOT_FOUND, tarn_session_keepalive(e, s));
    FAILS(TARN_NOT_FOUND, tarn_session_close(e, s));
    OK(tarn_listener_free(e, sl));

    /* A session kept alive in time outlives many leases. */
    uint64_t kept = OPEN_SESSION(e, "kept", 100);
    OK(write_owned(e, kept, "l", "kept", "1", NULL));
    for (int i = 0; i < 20; i++) {
        OK(tarn_clock_advance(e, 99, NULL));
        OK(tarn_engine_settle(e, 0));
        OK(tarn_session_keepalive(e, kept));
    }
    CHECK(IS_OPEN(e, kept));
    EXPECT_DOC(e, "l", "kept", "1");
    /* Exactly at the deadline it closes. */
    OK(tarn_clock_advance(e, 100, NULL));
    OK(tarn_engine_settle(e, 0));
    CHECK(!IS_OPEN(e, kept));
    EXPECT_ABSENT(e, "l", "kept");
    OK(tarn_session_close(e, kept));

    /* Lease 0: no lease. */
    OK(tarn_clock_advance(e, UINT64_C(1000000000), NULL));
    OK(tarn_engine_settle(e, 0));
    CHECK(IS_OPEN(e, forever));
    OK(tarn_session_close(e, forever));
    OK(tarn_listener_free(e, pres));
    OK(tarn_listener_free(e, data));
    tarn_engine_free(e);
}

/* ------------------------------------------------------------------------------------
 * Bound policies.
 * ---------------------------------------------------------------------------------- */

static void write_n(const tarn_engine *e, const char *bucket, int from, int to)
{
    for (int i = from; i < to; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        OK(tarn_store_write(e, bucket, key, JSON("1"), NULL, NULL));
    }
}

static void test_drop_policy(void)
{
    tarn_engine *e = manual_engine();
    if (e == NULL) {
        return;
    }
    uint64_t l = SUBSCRIBE(e, "d", "*", &(tarn_listen_options){.capacity = 2});
    write_n(e, "d", 0, 5);
    /* At the bound the new event is dropped and counted. */
    EXPECT_STATS(e, l, 0, 3);
    struct ev ev;
    if (OK(PULL(e, l, 0, &ev))) {
        CHECK(ev_is(ev.s, "write", "d", "k0") && ev_missed(ev.s) == 0);
    }
    if (OK(PULL(e, l, 0, &ev))) {
        CHECK(ev_is(ev.s, "write", "d", "k1") && ev_missed(ev.s) == 0);
    }
    EXPECT_NONE(e, l);
    EXPECT_STATS(e, l, 2, 3);
    /* The next accepted event says how many were missed before it. */
    write_n(e, "d", 5, 7);
    if (OK(PULL(e, l, 0, &ev))) {
        CHECK(ev_is(ev.s, "write", "d", "k5"));
        if (!CHECK(ev_missed(ev.s) == 3)) {
            fprintf(stdout, "    event: %s\n", ev.s);
        }
    }
    if (OK(PULL(e, l, 0, &ev))) {
        CHECK(ev_is(ev.s, "write", "d", "k6") && ev_missed(ev.s) == 0);
    }
    EXPECT_STATS(e, l, 4, 3);
    OK(tarn_listener_free(e, l));

    /* capacity 0 means 1024. */
    uint64_t d = SUBSCRIBE(e, "dd", "*", &(tarn_listen_options){.capacity = 0});
    write_n(e, "dd", 0, 1030);
    EXPECT_STATS(e, d, 0, 6);
    int n = 0;
    uint64_t missed_sum = 0;
    while (PULL(e, d, 0, &ev) == TARN_OK) {
        n++;
        missed_sum += ev_missed(ev.s);
    }
    CHECK(n == 1024 && missed_sum == 0);
    write_n(e, "dd", 1030, 1031);
    if (OK(PULL(e, d, 0, &ev))) {
        CHECK(ev_is(ev.s, "write", "dd", "k1030") && ev_missed(ev.s) == 6);
    }
    EXPECT_STATS(e, d, 1025, 6);
    OK(tarn_listener_free(e, d));
    tarn_engine_free(e);
}

struct block_writer {
    const tarn_engine *engine;
    atomic_int done; /* writes that have returned */
    int failures;
};

static void *block_write(void *arg)
{
    struct block_writer *w = arg;
    for (int i = 0; i < 3; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        if (tarn_store_write(w->engine, "blk", key, JSON("1"), NULL, NULL) != TARN_OK) {
            w->failures++;
        }
        atomic_fetch_add(&w->done, 1);
    }
    return NULL;
}

/* A callback on "src" that writes three documents to "dst", on an engine thread. */
static void copy_three(const uint8_t *event, size_t len, void *user_data)
{
    (void)event;
    (void)len;
    const tarn_engine *e = user_data;
    for (int i = 0; i < 3; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        tarn_store_write(e, "dst", key, JSON("1"), NULL, NULL);
    }
}

static void test_block_policy(void)
{
    tarn_engine *e = manual_engine();
    if (e == NULL) {
        return;
    }
    /* Capacity 1, blocking: a writer thread makes 3 writes; each waits for room, which
     * the main thread makes by pulling. */
    tarn_listen_options bo = {.flags = TARN_LISTEN_BLOCK, .capacity = 1, .block_timeout_ms = WAIT_MS};
    uint64_t l = SUBSCRIBE(e, "blk", "*", &bo);
    struct block_writer w = {.engine = e};
    atomic_init(&w.done, 0);
    pthread_t t;
    if (!CHECK(pthread_create(&t, NULL, block_write, &w) == 0)) {
        fprintf(stdout, "cannot start the writer thread\n");
        exit(2);
    }
    struct ev ev;
    if (OK(PULL(e, l, WAIT_MS, &ev))) {
        CHECK(ev_is(ev.s, "write", "blk", "k0") && ev_missed(ev.s) == 0);
    }
    /* The third write cannot have returned: it needs room that only the second pull
     * makes. */
    CHECK(atomic_load(&w.done) < 3);
    if (OK(PULL(e, l, WAIT_MS, &ev))) {
        CHECK(ev_is(ev.s, "write", "blk", "k1") && ev_missed(ev.s) == 0);
    }
    if (OK(PULL(e, l, WAIT_MS, &ev))) {
        CHECK(ev_is(ev.s, "write", "blk", "k2") && ev_missed(ev.s) == 0);
    }
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(atomic_load(&w.done) == 3 && w.failures == 0);
    EXPECT_NONE(e, l);
    EXPECT_STATS(e, l, 3, 0);
    OK(tarn_listener_free(e, l));

    /* Nobody pulls: a blocked publisher gives up after block_timeout_ms, then drops
     * and counts. */
    tarn_listen_options quick = {.flags = TARN_LISTEN_BLOCK, .capacity = 1, .block_timeout_ms = 1};
    uint64_t q = SUBSCRIBE(e, "q", "*", &quick);
    write_n(e, "q", 0, 3);
    EXPECT_STATS(e, q, 0, 2);
    if (OK(PULL(e, q, 0, &ev))) {
        CHECK(ev_is(ev.s, "write", "q", "k0") && ev_missed(ev.s) == 0);
    }
    write_n(e, "q", 3, 4);
    if (OK(PULL(e, q, 0, &ev))) {
        CHECK(ev_is(ev.s, "write", "q", "k3") && ev_missed(ev.s) == 2);
    }
    EXPECT_STATS(e, q, 2, 2);
    OK(tarn_listener_free(e, q));

    /* On an engine thread (a callback) a full blocking queue drops at once instead of
     * waiting (it would wait for the pool it holds). */
    uint64_t dst = SUBSCRIBE(e, "dst", "*", &bo);
    uint64_t src = 0;
    OK(tarn_bus_listen(e, 0, "src", "*", NULL, copy_three, e, &src));
    OK(tarn_store_write(e, "src", "go", JSON("1"), NULL, NULL));
    OK(tarn_engine_settle(e, WAIT_MS / 2)); /* would time out had the callback blocked */
    EXPECT_STATS(e, dst, 0, 2);
    EXPECT_SEQ(e, dst, {"write", "dst", "k0"});
    OK(tarn_listener_free(e, src));
    OK(tarn_listener_free(e, dst));
    tarn_engine_free(e);
}

/* ------------------------------------------------------------------------------------
 * The file descriptor.
 * ---------------------------------------------------------------------------------- */

static int poll_now(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
    int r = poll(&p, 1, 0);
    return r == 1 && (p.revents & POLLIN) ? 1 : r;
}

struct poller {
    int fd;
    pthread_barrier_t *ready;
    int result;
    short revents;
};

static void *poll_wait(void *arg)
{
    struct poller *p = arg;
    struct pollfd pf = {.fd = p->fd, .events = POLLIN, .revents = 0};
    pthread_barrier_wait(p->ready);
    p->result = poll(&pf, 1, WAIT_MS);
    p->revents = pf.revents;
    return NULL;
}

static void test_fd(void)
{
    tarn_engine *e = manual_engine();
    if (e == NULL) {
        return;
    }
    uint64_t l = SUBSCRIBE(e, "fd", "*", NULL);
    int32_t fd = -1;
    if (!OK(tarn_listener_fd(e, l, &fd)) || !CHECK(fd >= 0)) {
        tarn_engine_free(e);
        return;
    }
    int32_t fd2 = -1;
    OK(tarn_listener_fd(e, l, &fd2));
    CHECK(fd2 == fd); /* one fd per listener */

    CHECK(poll_now(fd) == 0); /* empty */
    OK(tarn_store_write(e, "fd", "a", JSON("1"), NULL, NULL));
    CHECK(poll_now(fd) == 1);
    CHECK(poll_now(fd) == 1); /* polling does not consume */
    OK(tarn_store_write(e, "fd", "b", JSON("1"), NULL, NULL));
    CHECK(poll_now(fd) == 1);
    struct ev ev;
    OK(PULL(e, l, 0, &ev));
    CHECK(poll_now(fd) == 1); /* one still waits */
    OK(PULL(e, l, 0, &ev));
    CHECK(ev_is(ev.s, "write", "fd", "b"));
    CHECK(poll_now(fd) == 0); /* drained */
    EXPECT_NONE(e, l);
    CHECK(poll_now(fd) == 0);

    /* A poll with a timeout in one thread, woken by a write from another. */
    pthread_barrier_t ready;
    if (!CHECK(pthread_barrier_init(&ready, NULL, 2) == 0)) {
        tarn_engine_free(e);
        return;
    }
    struct poller p = {.fd = fd, .ready = &ready, .result = -2};
    pthread_t t;
    if (!CHECK(pthread_create(&t, NULL, poll_wait, &p) == 0)) {
        fprintf(stdout, "cannot start the poll thread\n");
        exit(2);
    }
    pthread_barrier_wait(&ready);
    OK(tarn_store_write(e, "fd", "woken", JSON("1"), NULL, NULL));
    CHECK(pthread_join(t, NULL) == 0);
    pthread_barrier_destroy(&ready);
    CHECK(p.result == 1 && (p.revents & POLLIN));
    EXPECT_SEQ(e, l, {"write", "fd", "woken"});
    CHECK(poll_now(fd) == 0);

    /* A listener whose events came before its fd: readable at once. */
    uint64_t l2 = SUBSCRIBE(e, "fd", "*", NULL);
    OK(tarn_store_write(e, "fd", "early", JSON("1"), NULL, NULL));
    int32_t fd3 = -1;
    OK(tarn_listener_fd(e, l2, &fd3));
    CHECK(fd3 >= 0 && fd3 != fd);
    CHECK(poll_now(fd3) == 1);
    CHECK(poll_now(fd) == 1);
    EXPECT_SEQ(e, l2, {"write", "fd", "early"});
    EXPECT_SEQ(e, l, {"write", "fd", "early"});
    CHECK(poll_now(fd3) == 0 && poll_now(fd) == 0);

    /* A blocking tarn_listener_next in the main thread, woken by a writer thread. */
    struct block_writer w = {.engine = e};
    atomic_init(&w.done, 0);
    uint64_t blk = SUBSCRIBE(e, "blk", "*", NULL);
    if (!CHECK(pthread_create(&t, NULL, block_write, &w) == 0)) {
        exit(2);
    }
    int woke = 0;
    for (int i = 0; i < 3; i++) {
        woke += PULL(e, blk, WAIT_MS, &ev) == TARN_OK;
    }
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(woke == 3);
    EXPECT_NONE(e, blk);
    /* And a timeout when nothing comes. */
    FAILS(TARN_TIMEOUT, PULL(e, blk, 1, &ev));

    /* The header: the fd "is valid until tarn_listener_free". A listener closed by its
     * session keeps its fd open, and makes it readable so a poller wakes up. */
    uint64_t owner = OPEN_SESSION(e, "fd owner", 0);
    uint64_t sl = subscribe_at(e, owner, "fd", "*", NULL, __FILE__, __LINE__);
    int32_t sfd = -1;
    OK(tarn_listener_fd(e, sl, &sfd));
    CHECK(sfd >= 0 && fcntl(sfd, F_GETFD) != -1);
    OK(tarn_session_close(e, owner));
    CHECK(fcntl(sfd, F_GETFD) != -1);
    {
        struct pollfd p = {.fd = sfd, .events = POLLIN, .revents = 0};
        CHECK(poll(&p, 1, 0) == 1 && (p.revents & POLLIN));
    }
    OK(tarn_listener_free(e, sl));

    OK(tarn_listener_free(e, l));
    OK(tarn_listener_free(e, l2));
    OK(tarn_listener_free(e, blk));
    int32_t after = 12345;
    FAILS(TARN_NOT_FOUND, tarn_listener_fd(e, l, &after));
    CHECK(after == 12345);
    tarn_engine_free(e);
}

/* ------------------------------------------------------------------------------------
 * Bad input: every failure leaves its out-parameters alone.
 * ---------------------------------------------------------------------------------- */

static void ignore_event(const uint8_t *event, size_t len, void *user_data)
{
    (void)event;
    (void)len;
    (void)user_data;
}

static void test_bad_input(void)
{
    tarn_engine *e = manual_engine();
    if (e == NULL) {
        return;
    }
    uint64_t id = SENTINEL;
    struct ev ev;
    tarn_buf b;
    tarn_listener_stats st;
    int32_t fd = 12345;

    /* NULL arguments. */
    FAILS_NULL("callback", tarn_bus_listen(e, 0, "b", "*", NULL, NULL, NULL, &id));
    FAILS_NULL("callback", tarn_bus_listen(e, 0, "b", "*", &with_values, NULL, &id, &id));
    FAILS_NULL("engine", tarn_bus_listen(NULL, 0, "b", "*", NULL, ignore_event, NULL, &id));
    FAILS_NULL("bucket", tarn_bus_listen(e, 0, NULL, "*", NULL, ignore_event, NULL, &id));
    FAILS_NULL("key", tarn_bus_listen(e, 0, "b", NULL, NULL, ignore_event, NULL, &id));
    FAILS_NULL("out_listener", tarn_bus_listen(e, 0, "b", "*", NULL, ignore_event, NULL, NULL));
    FAILS_NULL("engine", tarn_bus_subscribe(NULL, 0, "b", "*", NULL, &id));
    FAILS_NULL("bucket", tarn_bus_subscribe(e, 0, NULL, "*", NULL, &id));
    FAILS_NULL("key", tarn_bus_subscribe(e, 0, "b", NULL, NULL, &id));
    FAILS_NULL("out_listener", tarn_bus_subscribe(e, 0, "b", "*", NULL, NULL));
    CHECK(id == SENTINEL);

    uint64_t l = SUBSCRIBE(e, "b", "*", NULL);
    uint64_t cl = 0;
    OK(tarn_bus_listen(e, 0, "b", "*", NULL, ignore_event, NULL, &cl));
    POISON(b);
    POISON(st);
    FAILS_NULL("engine", tarn_listener_next(NULL, l, 0, &b));
    FAILS_NULL("out_event", tarn_listener_next(e, l, 0, NULL));
    FAILS_NULL("engine", tarn_listener_fd(NULL, l, &fd));
    FAILS_NULL("out_fd", tarn_listener_fd(e, l, NULL));
    FAILS_NULL("engine", tarn_listener_get_stats(NULL, l, &st));
    FAILS_NULL("out_stats", tarn_listener_get_stats(e, l, NULL));
    FAILS_NULL("engine", tarn_listener_free(NULL, l));
    uint64_t s = OPEN_SESSION(e, "bad-input", 0);
    bool open;
    POISON(open);
    FAILS_NULL("engine", tarn_session_is_open(NULL, s, &open));
    FAILS_NULL("out_open", tarn_session_is_open(e, s, NULL));
    FAILS_NULL("engine", tarn_session_keepalive(NULL, s));
    FAILS_NULL("engine", tarn_session_close(NULL, s));
    CHECK(POISONED(b) && POISONED(st) && POISONED(open) && fd == 12345);

    /* Unknown and freed listener ids: TARN_NOT_FOUND. */
    uint64_t unknown_ids[] = {0, 999999, UINT64_MAX};
    for (size_t i = 0; i < 3; i++) {
        uint64_t u = unknown_ids[i];
        FAILS(TARN_NOT_FOUND, PULL(e, u, 0, &ev));
        FAILS(TARN_NOT_FOUND, tarn_listener_fd(e, u, &fd));
        FAILS(TARN_NOT_FOUND, tarn_listener_get_stats(e, u, &st));
        FAILS(TARN_NOT_FOUND, tarn_listener_free(e, u));
    }
    uint64_t freed = SUBSCRIBE(e, "b", "*", NULL);
    OK(tarn_listener_free(e, freed));
    FAILS(TARN_NOT_FOUND, PULL(e, freed, 0, &ev));
    FAILS(TARN_NOT_FOUND, PULL(e, freed, 10, &ev));
    FAILS(TARN_NOT_FOUND, tarn_listener_fd(e, freed, &fd));
    FAILS(TARN_NOT_FOUND, tarn_listener_get_stats(e, freed, &st));
    FAILS(TARN_NOT_FOUND, tarn_listener_free(e, freed));
    CHECK(POISONED(st) && fd == 12345);

    /* Unknown and freed session ids: TARN_NOT_FOUND. */
    uint64_t gone = OPEN_SESSION(e, "gone", 0);
    OK(tarn_session_close(e, gone));
    uint64_t bad_sessions[] = {gone, 999999, UINT64_MAX};
    for (size_t i = 0; i < 3; i++) {
        uint64_t u = bad_sessions[i];
        FAILS(TARN_NOT_FOUND, tarn_session_is_open(e, u, &open));
        FAILS(TARN_NOT_FOUND, tarn_session_keepalive(e, u));
        FAILS(TARN_NOT_FOUND, tarn_session_close(e, u));
        FAILS(TARN_NOT_FOUND, tarn_bus_subscribe(e, u, "b", "*", NULL, &id));
        FAILS(TARN_NOT_FOUND, tarn_bus_listen(e, u, "b", "*", NULL, ignore_event, NULL, &id));
        FAILS(TARN_NOT_FOUND, tarn_bus_signal(e, u, "b", "k", NULL, 0));
    }
    CHECK(POISONED(open) && id == SENTINEL);

    /* A callback listener cannot be pulled. */
    FAILS(TARN_NOT_SUPPORTED, PULL(e, cl, 0, &ev));
    FAILS(TARN_NOT_SUPPORTED, tarn_listener_fd(e, cl, &fd));
    CHECK(fd == 12345);

    /* Invalid patterns: the bucket and key rules of the store, with "*" allowed and
     * "$sessions" the one system bucket. */
    static const char *const bad_buckets[] = {"", " a", "a ", ".a", "a.", "$", "$sys", "$sessions2",
                                              "a\001b", "a\nb"};
    for (size_t i = 0; i < sizeof bad_buckets / sizeof bad_buckets[0]; i++) {
        FAILS(TARN_INVALID_ARGUMENT, tarn_bus_subscribe(e, 0, bad_buckets[i], "*", NULL, &id));
        FAILS(TARN_INVALID_ARGUMENT, tarn_bus_listen(e, 0, bad_buckets[i], "k", NULL, ignore_event, NULL, &id));
    }
    static const char *const bad_keys[] = {"", "a\001b", "\t", "x\x7f"};
    for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++) {
        FAILS(TARN_INVALID_ARGUMENT, tarn_bus_subscribe(e, 0, "b", bad_keys[i], NULL, &id));
        FAILS(TARN_INVALID_ARGUMENT, tarn_bus_listen(e, 0, "*", bad_keys[i], NULL, ignore_event, NULL, &id));
    }
    FAILS(TARN_INVALID_UTF8, tarn_bus_subscribe(e, 0, "\xff", "*", NULL, &id));
    FAILS(TARN_INVALID_UTF8, tarn_bus_subscribe(e, 0, "b", "k\xc3", NULL, &id));
    char long_bucket[130];
    memset(long_bucket, 'b', 129);
    long_bucket[129] = '\0';
    FAILS(TARN_TOO_LARGE, tarn_bus_subscribe(e, 0, long_bucket, "*", NULL, &id));
    CHECK(id == SENTINEL);

    /* Unknown listen flag bits. */
    static const uint32_t bad_flags[] = {0x10, 0x80, 0x80000000u, TARN_LISTEN_SEND_VALUES | 0x20};
    for (size_t i = 0; i < sizeof bad_flags / sizeof bad_flags[0]; i++) {
        tarn_listen_options o = {.flags = bad_flags[i]};
        FAILS(TARN_INVALID_ARGUMENT, tarn_bus_subscribe(e, 0, "b", "*", &o, &id));
        FAILS(TARN_INVALID_ARGUMENT, tarn_bus_listen(e, 0, "b", "*", &o, ignore_event, NULL, &id));
    }
    CHECK(id == SENTINEL);

    /* Invalid JSON signals. */
    FAILS(TARN_INVALID_JSON, tarn_bus_signal(e, 0, "b", "k", JSON("{")));
    FAILS(TARN_INVALID_JSON, tarn_bus_signal(e, s, "b", "k", JSON("nul")));
    FAILS(TARN_INVALID_ARGUMENT, tarn_bus_signal(e, 0, "b", "k", (const uint8_t *)"1", SIZE_MAX));
    /* None of this reached the listener; all of the valid listeners still work. */
    EXPECT_NONE(e, l);
    EXPECT_STATS(e, cl, 0, 0);
    OK(tarn_bus_signal(e, 0, "b", "k", JSON("1")));
    EXPECT_SEQ(e, l, {"signal", "b", "k"});

    OK(tarn_listener_free(e, l));
    OK(tarn_listener_free(e, cl));
    OK(tarn_session_close(e, s));
    tarn_engine_free(e);
}

/* ------------------------------------------------------------------------------------
 * A closed engine.
 * ---------------------------------------------------------------------------------- */

struct next_waiter {
    const tarn_engine *engine;
    uint64_t listener;
    pthread_barrier_t *ready;
    tarn_status status;
};

static void *wait_next(void *arg)
{
    struct next_waiter *w = arg;
    tarn_buf b = {NULL, 0, NULL};
    pthread_barrier_wait(w->ready);
    w->status = tarn_listener_next(w->engine, w->listener, WAIT_MS, &b);
    if (w->status == TARN_OK) {
        tarn_buf_free(&b);
    }
    return NULL;
}

static void test_closed_engine(void)
{
    tarn_engine *e = manual_engine();
    if (e == NULL) {
        return;
    }
    uint64_t l = SUBSCRIBE(e, "c", "*", NULL);
    uint64_t waited = SUBSCRIBE(e, "w", "*", NULL);
    uint64_t s = OPEN_SESSION(e, "closing", 0);
    uint64_t sl = subscribe_at(e, s, "c", "*", NULL, __FILE__, __LINE__);
    struct counter c;
    counter_init(&c, e);
    uint64_t cl = 0;
    OK(tarn_bus_listen(e, 0, "c", "*", NULL, on_event, &c, &cl));
    OK(tarn_engine_settle(e, 0));
    OK(tarn_store_write(e, "c", "queued", JSON("1"), NULL, NULL));
    OK(tarn_engine_settle(e, 0));
    CHECK(counter_get(&c).events == 1);

    /* A thread waiting in tarn_listener_next is woken by the close: TARN_CLOSED (not
     * TARN_TIMEOUT after WAIT_MS). */
    pthread_barrier_t ready;
    if (!CHECK(pthread_barrier_init(&ready, NULL, 2) == 0)) {
        tarn_engine_free(e);
        return;
    }
    struct next_waiter w = {.engine = e, .listener = waited, .ready = &ready, .status = TARN_PANIC};
    pthread_t t;
    if (!CHECK(pthread_create(&t, NULL, wait_next, &w) == 0)) {
        fprintf(stdout, "cannot start the waiting thread\n");
        exit(2);
    }
    pthread_barrier_wait(&ready);
    OK(tarn_engine_close(e));
    CHECK(pthread_join(t, NULL) == 0);
    pthread_barrier_destroy(&ready);
    CHECK(w.status == TARN_CLOSED);
    OK(tarn_engine_close(e)); /* twice is harmless */

    uint64_t id = SENTINEL;
    FAILS(TARN_CLOSED, tarn_bus_subscribe(e, 0, "c", "*", NULL, &id));
    FAILS(TARN_CLOSED, tarn_bus_subscribe(e, s, "c", "*", NULL, &id));
    FAILS(TARN_CLOSED, tarn_bus_listen(e, 0, "c", "*", NULL, ignore_event, NULL, &id));
    FAILS(TARN_CLOSED, tarn_session_open(e, "late", 0, &id));
    CHECK(id == SENTINEL);
    FAILS(TARN_CLOSED, tarn_bus_signal(e, 0, "c", "k", NULL, 0));
    FAILS(TARN_CLOSED, tarn_bus_signal(e, s, "c", "k", NULL, 0));
    FAILS(TARN_CLOSED, tarn_session_keepalive(e, s));
    FAILS(TARN_CLOSED, tarn_store_write(e, "c", "late", JSON("1"), NULL, NULL));
    CHECK(counter_get(&c).events == 1); /* no callback runs after the close */

    /* Closing the engine closes its listeners and discards what they held. */
    struct ev ev;
    FAILS(TARN_CLOSED, PULL(e, l, 0, &ev)); /* the event queued before the close is gone */
    FAILS(TARN_CLOSED, PULL(e, l, 1, &ev));
    FAILS(TARN_CLOSED, PULL(e, sl, 0, &ev));
    FAILS(TARN_CLOSED, PULL(e, waited, 0, &ev));
    FAILS(TARN_NOT_SUPPORTED, PULL(e, cl, 0, &ev));
    int32_t fd = 12345;
    FAILS(TARN_CLOSED, tarn_listener_fd(e, l, &fd));
    CHECK(fd == 12345);
    FAILS(TARN_NOT_FOUND, PULL(e, 424242, 0, &ev));

    /* The header: "Afterwards every call on it fails with TARN_CLOSED". These two
     * still answer (see the report). */
    tarn_listener_stats st;
    CHECK(tarn_listener_get_stats(e, l, &st) == TARN_CLOSED);
    bool open = true;
    tarn_status is_open = tarn_session_is_open(e, s, &open);
    CHECK(is_open == TARN_CLOSED);
    CHECK(is_open == TARN_CLOSED || (is_open == TARN_OK && !open)); /* never "open" */

    /* Releasing the ids after the close may succeed or say TARN_CLOSED; either way the
     * engine frees everything (LeakSanitizer). */
    tarn_status fs = tarn_listener_free(e, l);
    CHECK(fs == TARN_OK || fs == TARN_CLOSED);
    fs = tarn_session_close(e, s);
    CHECK(fs == TARN_OK || fs == TARN_CLOSED);
    tarn_engine_free(e);
    pthread_mutex_destroy(&c.mu);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    CHECK(tarn_abi_version() == TARN_ABI_VERSION);
    CHECK(TARN_ABI_VERSION == 2);
    test_wildcard_matrix();
    test_change_events();
    test_signals();
    test_callbacks();
    test_per_key_order();
    test_from_version();
    test_sessions();
    test_leases();
    test_drop_policy();
    test_block_policy();
    test_fd();
    test_bad_input();
    test_closed_engine();

    return check_summary();
}
