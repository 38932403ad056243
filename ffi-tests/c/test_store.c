/*
 * test_store.c: tests of tarn's C ABI (include/tarn.h): the engine builder and
 * lifecycle, the clock, settle, and the JSON document store.
 *
 * Built and run by tests/ffi.rs (`cargo test --test ffi c_programs`) with
 *   cc -std=c11 -g -Wall -Wextra -Werror -pedantic -I include ffi-tests/c/test_store.c
 *      -L target/debug -ltarn -Wl,-rpath,target/debug -lpthread
 *      -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
 * and run from the repository root under LeakSanitizer. Exit status 0: every check
 * passed. The last line of output is "N passed, M failed".
 *
 * What it covers: every engine, clock and store function of the header at least once
 * (the bus and sessions are tested by test_bus.c); every error status the
 * engine and the store can return, with its exact value and a non-empty
 * tarn_last_error(); for each failure, that out-parameters were not written (they are
 * pre-filled with 0xAA bytes or 12345) and that the stored document is byte-identical
 * afterwards; the success paths; and two multi-threaded checks. Nothing sleeps: time
 * moves only through a manual engine clock, and waiting is tarn_engine_settle.
 *
 * TARN_TIMEOUT and TARN_PANIC have no deterministic trigger through this header (the
 * store runs no user callbacks and its background work always finishes), so only their
 * names are checked.
 */
#define _POSIX_C_SOURCE 200809L

#include "tarn.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* ------------------------------------------------------------------------------------
 * Helpers: JSON arguments, sentinels, comparing returned bytes.
 * ---------------------------------------------------------------------------------- */


static bool buf_is_n(const tarn_buf *b, const char *s, size_t n)
{
    return b->len == n && b->data != NULL && memcmp(b->data, s, n) == 0;
}

static bool buf_is(const tarn_buf *b, const char *s) { return buf_is_n(b, s, strlen(s)); }

static bool buf_zeroed(const tarn_buf *b)
{
    return b->data == NULL && b->len == 0 && b->_owner == NULL;
}

/* The call returned OK and `*b` holds exactly `want`; frees `*b`. */
static void expect_json_at(tarn_status st, tarn_buf *b, const char *want, const char *file,
                           int line, const char *call)
{
    if (!status_at(st, TARN_OK, NULL, file, line, call)) {
        return;
    }
    if (!check_at(buf_is(b, want), file, line, "returned JSON equals the expected text")) {
        fprintf(stdout, "    got:      %.*s\n    expected: %s\n", (int)b->len,
                b->data != NULL ? (const char *)b->data : "", want);
    }
    tarn_buf_free(b);
}

#define EXPECT_JSON(call, buf, want) expect_json_at((call), (buf), (want), __FILE__, __LINE__, #call)

/* bucket/key holds exactly `json` (n bytes), at `version` unless that is 0. */
static void expect_doc_at(const tarn_engine *e, const char *bucket, const char *key,
                          const char *json, size_t n, uint64_t version, const char *file,
                          int line)
{
    tarn_buf b;
    tarn_doc_info info;
    POISON(b);
    POISON(info);
    if (!status_at(tarn_store_read(e, bucket, key, &b, &info), TARN_OK, NULL, file, line,
                   "read back the stored document")) {
        return;
    }
    if (!check_at(buf_is_n(&b, json, n), file, line, "the stored document is byte-identical")) {
        fprintf(stdout, "    got:      %.*s\n    expected: %.*s\n", (int)b.len,
                b.data != NULL ? (const char *)b.data : "", (int)n, json);
    }
    if (version != 0) {
        check_at(info.version == version, file, line, "the stored version is the expected one");
    }
    tarn_buf_free(&b);
}

#define EXPECT_DOC(e, bucket, key, json, version) \
    expect_doc_at((e), (bucket), (key), (json), strlen(json), (version), __FILE__, __LINE__)

/* bucket/key is absent (read gives TARN_NOT_FOUND, out-parameters untouched). */
static void expect_absent_at(const tarn_engine *e, const char *bucket, const char *key,
                             const char *file, int line)
{
    tarn_buf b;
    tarn_doc_info info;
    POISON(b);
    POISON(info);
    status_at(tarn_store_read(e, bucket, key, &b, &info), TARN_NOT_FOUND, NULL, file, line,
              "read of an absent key");
    check_at(POISONED(b) && POISONED(info), file, line,
             "a failed read writes neither out_doc nor out_info");
}

#define EXPECT_ABSENT(e, bucket, key) expect_absent_at((e), (bucket), (key), __FILE__, __LINE__)

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

/* An engine on a manual clock at `start_ms`, with two workers. */
static tarn_engine *manual_engine(uint64_t start_ms)
{
    tarn_engine_builder *b = tarn_engine_builder_new();
    if (!CHECK(b != NULL)) {
        return NULL;
    }
    OK(tarn_engine_builder_manual_clock(b, start_ms));
    OK(tarn_engine_builder_workers(b, 2));
    tarn_engine *e = NULL;
    OK(tarn_engine_builder_build(b, &e));
    tarn_engine_builder_free(b);
    CHECK(e != NULL);
    return e;
}

/* A pointer value that the library never produces, to see that out_engine is not
 * written on failure. */
static char not_an_engine;
#define ENGINE_SENTINEL ((tarn_engine *)(void *)&not_an_engine)

/* Every store operation on bucket/key fails with `want` and writes no out-parameter.
 * With `whole_bucket`, read_all and list on the bucket fail the same way. */
static void every_call_fails_at(const tarn_engine *e, const char *bucket, const char *key,
                                bool whole_bucket, tarn_status want, const char *file,
                                int line)
{
    uint64_t v = SENTINEL;
    tarn_buf b;
    tarn_doc_info info;
    tarn_write_options wo = {.flags = TARN_WRITE_FAIL_IF_EXISTS, .ttl_ms = 1000};

    status_at(tarn_store_write(e, bucket, key, JSON("{\"x\":1}"), &wo, &v), want, NULL, file,
              line, "tarn_store_write");
    check_at(v == SENTINEL, file, line, "a failed write leaves out_version alone");

    POISON(b);
    POISON(info);
    status_at(tarn_store_read(e, bucket, key, &b, &info), want, NULL, file, line,
              "tarn_store_read");
    check_at(POISONED(b) && POISONED(info), file, line,
             "a failed read leaves out_doc and out_info alone");

    POISON(b);
    v = SENTINEL;
    status_at(tarn_store_patch(e, bucket, key, JSON("[]"), NULL, &v, &b), want, NULL, file,
              line, "tarn_store_patch");
    check_at(v == SENTINEL && POISONED(b), file, line,
             "a failed patch leaves out_version and out_doc alone");

    v = SENTINEL;
    status_at(tarn_store_remove(e, bucket, key, NULL, &v), want, NULL, file, line,
              "tarn_store_remove");
    check_at(v == SENTINEL, file, line, "a failed remove leaves out_version alone");

    if (whole_bucket) {
        POISON(b);
        status_at(tarn_store_read_all(e, bucket, &b), want, NULL, file, line,
                  "tarn_store_read_all");
        check_at(POISONED(b), file, line, "a failed read_all leaves out_json alone");
        POISON(b);
        status_at(tarn_store_list(e, bucket, 0, &b), want, NULL, file, line, "tarn_store_list");
        check_at(POISONED(b), file, line, "a failed list leaves out_json alone");
        POISON(b);
        status_at(tarn_store_list(e, bucket, TARN_LIST_KEYS_ONLY, &b), want, NULL, file, line,
                  "tarn_store_list (keys only)");
        check_at(POISONED(b), file, line, "a failed list leaves out_json alone");
    }
}

#define EVERY_CALL_FAILS(e, bucket, key, whole_bucket, want) \
    every_call_fails_at((e), (bucket), (key), (whole_bucket), (want), __FILE__, __LINE__)

/* ------------------------------------------------------------------------------------
 * Tests.
 * ---------------------------------------------------------------------------------- */

static void test_versions_and_names(void)
{
    /* The first tarn call of the process: no failure yet on this thread. */
    CHECK(tarn_last_error() != NULL && strcmp(tarn_last_error(), "") == 0);

    CHECK(TARN_ABI_VERSION == 2); /* the header this program was written against */
    CHECK(tarn_abi_version() == TARN_ABI_VERSION);
    CHECK(tarn_abi_version() == 2);
    CHECK(TARN_TOO_OLD == 17);
    const char *version = tarn_version();
    CHECK(version != NULL && version[0] != '\0');
    CHECK(version != NULL && strchr(version, '.') != NULL);

    static const tarn_status all[] = tarn_status_ALL;
    static const char *const names[] = {
        "TARN_OK",           "TARN_NOT_FOUND",        "TARN_EXISTS",
        "TARN_INVALID_ARGUMENT", "TARN_NULL_ARGUMENT", "TARN_INVALID_UTF8",
        "TARN_INVALID_JSON", "TARN_INVALID_PATCH",    "TARN_PATCH_PATH_NOT_FOUND",
        "TARN_PATCH_TEST_FAILED", "TARN_VERSION_CONFLICT", "TARN_TOO_LARGE",
        "TARN_FULL",         "TARN_TIMEOUT",          "TARN_NOT_SUPPORTED",
        "TARN_CLOSED",       "TARN_PANIC",            "TARN_TOO_OLD",
    };
    CHECK(sizeof all / sizeof all[0] == 18);
    CHECK(sizeof names / sizeof names[0] == sizeof all / sizeof all[0]);
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        CHECK((int)all[i] == (int)i); /* values are 0..17, in order, no gaps */
        const char *n = tarn_status_name((int32_t)all[i]);
        if (!CHECK(n != NULL && strcmp(n, names[i]) == 0)) {
            fprintf(stdout, "    status %d: got \"%s\", expected \"%s\"\n", (int)all[i],
                    n != NULL ? n : "(NULL)", names[i]);
        }
    }
    static const int32_t unknown[] = {-1, 18, 19, 1000, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *n = tarn_status_name(unknown[i]);
        CHECK(n != NULL && strcmp(n, "TARN_UNKNOWN_STATUS") == 0);
    }
    /* Looking up names is not a failing call. */
    CHECK(strcmp(tarn_last_error(), "") == 0);
}

static void test_free_functions_accept_null(void)
{
    tarn_buf_free(NULL);
    tarn_buf zero = {NULL, 0, NULL};
    tarn_buf_free(&zero);
    tarn_buf_free(&zero);
    CHECK(buf_zeroed(&zero));
    tarn_engine_free(NULL);
    tarn_engine_builder_free(NULL);
    CHECK(strcmp(tarn_last_error(), "") == 0);
}

static void test_builder(void)
{
    tarn_engine *e = ENGINE_SENTINEL;

    /* NULL builder for every setter, and for build. */
    FAILS_NULL("builder", tarn_engine_builder_workers(NULL, 2));
    FAILS_NULL("builder", tarn_engine_builder_queue_capacity(NULL, 16));
    FAILS_NULL("builder", tarn_engine_builder_manual_clock(NULL, 0));
    FAILS_NULL("builder", tarn_engine_builder_max_bucket_bytes(NULL, 8));
    FAILS_NULL("builder", tarn_engine_builder_max_key_bytes(NULL, 8));
    FAILS_NULL("builder", tarn_engine_builder_max_document_bytes(NULL, 8));
    FAILS_NULL("builder", tarn_engine_builder_store_capacity_bytes(NULL, 8));
    FAILS_NULL("builder", tarn_engine_builder_change_log_capacity(NULL, 8));
    FAILS_NULL("builder", tarn_engine_builder_build(NULL, &e));
    CHECK(e == ENGINE_SENTINEL);
    FAILS_NULL("out_engine", tarn_engine_new(NULL));

    tarn_engine_builder *b = tarn_engine_builder_new();
    if (!CHECK(b != NULL)) {
        return;
    }
    FAILS_NULL("out_engine", tarn_engine_builder_build(b, NULL));

    /* Setters accept anything; build checks. */
    OK(tarn_engine_builder_workers(b, 0));
    FAILS(TARN_INVALID_ARGUMENT, tarn_engine_builder_build(b, &e));
    CHECK(e == ENGINE_SENTINEL);
    OK(tarn_engine_builder_workers(b, 257));
    FAILS(TARN_INVALID_ARGUMENT, tarn_engine_builder_build(b, &e));
    CHECK(e == ENGINE_SENTINEL);
    OK(tarn_engine_builder_workers(b, 1));
    OK(tarn_engine_builder_queue_capacity(b, 0));
    FAILS(TARN_INVALID_ARGUMENT, tarn_engine_builder_build(b, &e));
    CHECK(e == ENGINE_SENTINEL);
    OK(tarn_engine_builder_queue_capacity(b, 1));
    OK(tarn_engine_builder_max_key_bytes(b, 0));
    FAILS(TARN_INVALID_ARGUMENT, tarn_engine_builder_build(b, &e));
    OK(tarn_engine_builder_max_key_bytes(b, 16));
    OK(tarn_engine_builder_max_bucket_bytes(b, 0));
    FAILS(TARN_INVALID_ARGUMENT, tarn_engine_builder_build(b, &e));
    OK(tarn_engine_builder_max_bucket_bytes(b, 16));
    OK(tarn_engine_builder_max_document_bytes(b, 0));
    FAILS(TARN_INVALID_ARGUMENT, tarn_engine_builder_build(b, &e));
    CHECK(e == ENGINE_SENTINEL);
    OK(tarn_engine_builder_max_document_bytes(b, 64));
    OK(tarn_engine_builder_manual_clock(b, 42));
    OK(tarn_engine_builder_change_log_capacity(b, 0)); /* 0 is allowed: keep no changes */
    OK(tarn_engine_builder_change_log_capacity(b, 16));

    /* Building does not consume the builder: two engines from one builder, each with
     * its own store and clock. */
    tarn_engine *e1 = NULL;
    tarn_engine *e2 = NULL;
    OK(tarn_engine_builder_build(b, &e1));
    OK(tarn_engine_builder_build(b, &e2));
    tarn_engine_builder_free(b);
    if (CHECK(e1 != NULL && e2 != NULL && e1 != e2)) {
        CHECK(clock_now(e1) == 42);
        OK(tarn_clock_advance(e1, 8, NULL));
        CHECK(clock_now(e1) == 50);
        /* Each engine built from one builder gets its own manual clock. */
        CHECK(clock_now(e2) == 42);
        OK(tarn_store_write(e1, "b", "k", JSON("1"), NULL, NULL));
        EXPECT_ABSENT(e2, "b", "k");
        /* e1 has the builder's bounds: keys up to 16 bytes (1 worker, queue of 1). */
        FAILS(TARN_TOO_LARGE, tarn_store_write(e1, "b", "12345678901234567", JSON("1"), NULL, NULL));
    }
    tarn_engine_free(e1);
    tarn_engine_free(e2);
}

static void test_system_clock_engine(void)
{
    tarn_engine *e = ENGINE_SENTINEL;
    if (!OK(tarn_engine_new(&e)) || !CHECK(e != NULL && e != ENGINE_SENTINEL)) {
        return;
    }
    uint64_t t1 = clock_now(e);
    uint64_t t2 = clock_now(e);
    CHECK(t1 > UINT64_C(1577836800000)); /* after 2020-01-01: wall-clock based */
    CHECK(t2 >= t1);

    uint64_t out = SENTINEL;
    FAILS(TARN_NOT_SUPPORTED, tarn_clock_set(e, t2 + 1000));
    FAILS(TARN_NOT_SUPPORTED, tarn_clock_advance(e, 1000, &out));
    CHECK(out == SENTINEL);
    FAILS(TARN_NOT_SUPPORTED, tarn_clock_advance(e, 1000, NULL));
    CHECK(clock_now(e) - t2 < 1000000); /* nobody moved it by a second step */

    FAILS_NULL("out_ms", tarn_clock_now(e, NULL));
    FAILS_NULL("engine", tarn_clock_now(NULL, &out));
    CHECK(out == SENTINEL);

    /* A TTL on the system clock: a long one, so it cannot expire during the test. */
    tarn_write_options wo = {.ttl_ms = 3600000};
    tarn_doc_info info;
    tarn_buf b;
    OK(tarn_store_write(e, "sys", "k", JSON("{}"), &wo, NULL));
    if (OK(tarn_store_read(e, "sys", "k", &b, &info))) {
        CHECK(info.modified_ms >= t2);
        CHECK(info.expires_ms == info.modified_ms + 3600000);
        tarn_buf_free(&b);
    }
    OK(tarn_engine_settle(e, 0));
    OK(tarn_engine_settle(e, 10000));
    tarn_engine_free(e); /* free without close: closes it */
}

static void test_manual_clock(void)
{
    tarn_engine *e = manual_engine(1000000);
    if (e == NULL) {
        return;
    }
    CHECK(clock_now(e) == 1000000);
    uint64_t now = SENTINEL;
    OK(tarn_clock_advance(e, 500, &now));
    CHECK(now == 1000500);
    OK(tarn_clock_advance(e, 0, &now));
    CHECK(now == 1000500);
    OK(tarn_clock_advance(e, 1, NULL));
    CHECK(clock_now(e) == 1000501);
    OK(tarn_clock_set(e, 2000000));
    CHECK(clock_now(e) == 2000000);
    OK(tarn_clock_set(e, 2000000)); /* to now: not backwards */
    FAILS(TARN_INVALID_ARGUMENT, tarn_clock_set(e, 1999999));
    FAILS(TARN_INVALID_ARGUMENT, tarn_clock_set(e, 0));
    CHECK(clock_now(e) == 2000000);

    FAILS_NULL("engine", tarn_clock_set(NULL, 1));
    now = SENTINEL;
    FAILS_NULL("engine", tarn_clock_advance(NULL, 1, &now));
    CHECK(now == SENTINEL);
    CHECK(clock_now(e) == 2000000);

    /* Nothing scheduled: settle returns at once, with or without a limit. */
    OK(tarn_engine_settle(e, 0));
    OK(tarn_engine_settle(e, 10000));
    FAILS_NULL("engine", tarn_engine_settle(NULL, 0));
    tarn_engine_free(e);
}

static void test_last_error_is_per_call_and_sticky(void)
{
    tarn_engine *e = manual_engine(0);
    if (e == NULL) {
        return;
    }
    FAILS(TARN_NOT_FOUND, tarn_store_read(e, "b", "missing", &(tarn_buf){0}, NULL));
    char saved[256];
    snprintf(saved, sizeof saved, "%s", tarn_last_error());
    CHECK(saved[0] != '\0');
    CHECK(strstr(saved, "missing") != NULL); /* the message names what was missing */
    /* A successful call leaves the message alone. */
    OK(tarn_store_write(e, "b", "k", JSON("1"), NULL, NULL));
    CHECK(strcmp(tarn_last_error(), saved) == 0);
    /* The next failure replaces it. */
    FAILS(TARN_INVALID_JSON, tarn_store_write(e, "b", "k", JSON("{"), NULL, NULL));
    CHECK(strcmp(tarn_last_error(), saved) != 0);
    tarn_engine_free(e);
}

static void test_write_read(void)
{
    const uint64_t t0 = UINT64_C(1700000000000);
    tarn_engine *e = manual_engine(t0);
    if (e == NULL) {
        return;
    }
    tarn_buf b;
    tarn_doc_info info;

    /* An empty store. */
    CHECK(last_version(e) == 0);
    EXPECT_JSON(tarn_store_buckets(e, &b), &b, "[]");
    EXPECT_JSON(tarn_store_read_all(e, "users", &b), &b, "[]");
    EXPECT_JSON(tarn_store_list(e, "users", 0, &b), &b, "[]");
    EXPECT_JSON(tarn_store_list(e, "users", TARN_LIST_KEYS_ONLY, &b), &b, "[]");
    EXPECT_ABSENT(e, "users", "ada");

    /* Stored as given: whitespace, key order and escapes are kept byte for byte. */
    const char *ada = "  {\"name\": \"Ada\",  \"born\" : 1815,\n\t\"tags\":[ \"x\" ,\"\\u00e9\"] }\n";
    uint64_t v1 = SENTINEL;
    OK(tarn_store_write(e, "users", "ada", JSON(ada), NULL, &v1));
    CHECK(v1 != SENTINEL && v1 > 0);
    CHECK(last_version(e) == v1);
    POISON(b);
    POISON(info);
    if (OK(tarn_store_read(e, "users", "ada", &b, &info))) {
        CHECK(buf_is(&b, ada));
        CHECK(info.version == v1);
        CHECK(info.modified_ms == t0);
        CHECK(info.expires_ms == 0);
        tarn_buf_free(&b);
        CHECK(buf_zeroed(&b));
        tarn_buf_free(&b); /* freeing the zeroed buffer again does nothing */
        CHECK(buf_zeroed(&b));
    }
    /* out_info may be NULL. */
    POISON(b);
    if (OK(tarn_store_read(e, "users", "ada", &b, NULL))) {
        CHECK(buf_is(&b, ada));
        tarn_buf_free(&b);
    }

    /* A returned buffer stays valid after the document changes, is removed, or the
     * engine goes away (it shares the stored bytes). */
    tarn_buf old;
    POISON(old);
    OK(tarn_store_read(e, "users", "ada", &old, NULL));

    /* Every change gets a greater version, from one store-wide sequence. */
    OK(tarn_clock_advance(e, 10, NULL));
    uint64_t v2 = SENTINEL;
    OK(tarn_store_write(e, "users", "ada", JSON("{\"name\":\"Ada Lovelace\"}"), NULL, &v2));
    CHECK(v2 > v1);
    uint64_t v3 = SENTINEL;
    OK(tarn_store_write(e, "users", "bob", JSON("[]"), NULL, &v3));
    CHECK(v3 > v2);
    uint64_t v4 = SENTINEL;
    OK(tarn_store_write(e, "users", "ada", JSON("{\"name\":\"A.\"}"), NULL, &v4));
    CHECK(v4 > v3);
    CHECK(last_version(e) == v4);
    POISON(info);
    POISON(b);
    if (OK(tarn_store_read(e, "users", "ada", &b, &info))) {
        CHECK(buf_is(&b, "{\"name\":\"A.\"}"));
        CHECK(info.version == v4);
        CHECK(info.modified_ms == t0 + 10);
        CHECK(info.expires_ms == 0);
        tarn_buf_free(&b);
    }
    /* The old buffer still has the first bytes. */
    CHECK(buf_is(&old, ada));

    /* options NULL and out_version NULL are allowed; the zeroed options are the same. */
    OK(tarn_store_write(e, "users", "cy", JSON("null"), NULL, NULL));
    tarn_write_options zero = {.flags = 0, .ttl_ms = 0, .if_version = 0};
    uint64_t v5 = SENTINEL;
    OK(tarn_store_write(e, "users", "cy", JSON("true"), &zero, &v5));
    CHECK(v5 == last_version(e));
    EXPECT_DOC(e, "users", "cy", "true", v5);

    /* Any JSON value is a document. */
    static const char *const values[] = {
        "0", "-1.5e3", "\"text\"", "null", "false", "[]", "{}",
        "\"caf\xc3\xa9 \\ud83d\\ude00\"", "[[[[[[[[[[1]]]]]]]]]]", " 7 ",
    };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        OK(tarn_store_write(e, "values", "v", JSON(values[i]), NULL, NULL));
        EXPECT_DOC(e, "values", "v", values[i], 0);
    }
    /* Deep nesting is accepted up to a bound (src/store/document.rs says 128; the
     * parser refuses 128 and accepts 127, see test_invalid_json). */
    char deep[2 * 127 + 1];
    memset(deep, '[', 127);
    memset(deep + 127, ']', 127);
    deep[254] = '\0';
    OK(tarn_store_write(e, "values", "deep", JSON(deep), NULL, NULL));
    EXPECT_DOC(e, "values", "deep", deep, 0);

    /* Unusual but valid names. */
    static const char *const buckets[] = {"a b", "a.b", "a$", "-", "caf\xc3\xa9", "0"};
    static const char *const keys[] = {" ", ".", "a/b", " lead", "trail ", "$k", "k*", "\"q\""};
    for (size_t i = 0; i < sizeof buckets / sizeof buckets[0]; i++) {
        OK(tarn_store_write(e, buckets[i], "k", JSON("1"), NULL, NULL));
        EXPECT_DOC(e, buckets[i], "k", "1", 0);
    }
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        OK(tarn_store_write(e, "keys", keys[i], JSON("2"), NULL, NULL));
        EXPECT_DOC(e, "keys", keys[i], "2", 0);
    }

    /* Remove, then the key is absent; its buffer from before is still readable. */
    uint64_t vr = SENTINEL;
    OK(tarn_store_remove(e, "users", "ada", NULL, &vr));
    CHECK(vr > v5 && vr == last_version(e));
    EXPECT_ABSENT(e, "users", "ada");
    CHECK(buf_is(&old, ada));

    tarn_engine_free(e);
    CHECK(buf_is(&old, ada)); /* the buffer outlives the engine */
    tarn_buf_free(&old);
    CHECK(buf_zeroed(&old));
}

static void test_null_arguments(void)
{
    tarn_engine *e = manual_engine(0);
    if (e == NULL) {
        return;
    }
    const char *doc = "{\"keep\": true}";
    uint64_t v0 = SENTINEL;
    OK(tarn_store_write(e, "b", "k", JSON(doc), NULL, &v0));

    uint64_t v = SENTINEL;
    tarn_buf b;
    tarn_doc_info info;
    POISON(b);
    POISON(info);

    /* NULL engine. */
    FAILS_NULL("engine", tarn_store_read(NULL, "b", "k", &b, &info));
    FAILS_NULL("engine", tarn_store_read_all(NULL, "b", &b));
    FAILS_NULL("engine", tarn_store_list(NULL, "b", 0, &b));
    FAILS_NULL("engine", tarn_store_buckets(NULL, &b));
    FAILS_NULL("engine", tarn_store_write(NULL, "b", "k", JSON("1"), NULL, &v));
    FAILS_NULL("engine", tarn_store_patch(NULL, "b", "k", JSON("[]"), NULL, &v, &b));
    FAILS_NULL("engine", tarn_store_remove(NULL, "b", "k", NULL, &v));
    FAILS_NULL("engine", tarn_store_last_version(NULL, &v));
    FAILS_NULL("engine", tarn_engine_close(NULL));
    CHECK(v == SENTINEL && POISONED(b) && POISONED(info));

    /* NULL bucket, NULL key. */
    EVERY_CALL_FAILS(e, NULL, "k", true, TARN_NULL_ARGUMENT);
    FAILS_NULL("bucket", tarn_store_read(e, NULL, "k", &b, &info));
    FAILS_NULL("key", tarn_store_read(e, "b", NULL, &b, &info));
    FAILS_NULL("bucket", tarn_store_read_all(e, NULL, &b));
    FAILS_NULL("bucket", tarn_store_list(e, NULL, TARN_LIST_KEYS_ONLY, &b));
    FAILS_NULL("bucket", tarn_store_write(e, NULL, "k", JSON("1"), NULL, &v));
    FAILS_NULL("key", tarn_store_write(e, "b", NULL, JSON("1"), NULL, &v));
    FAILS_NULL("bucket", tarn_store_patch(e, NULL, "k", JSON("[]"), NULL, &v, &b));
    FAILS_NULL("key", tarn_store_patch(e, "b", NULL, JSON("[]"), NULL, &v, &b));
    FAILS_NULL("bucket", tarn_store_remove(e, NULL, "k", NULL, &v));
    FAILS_NULL("key", tarn_store_remove(e, "b", NULL, NULL, &v));
    EVERY_CALL_FAILS(e, "b", NULL, false, TARN_NULL_ARGUMENT);

    /* NULL JSON text and patch operations (even with length 0). */
    FAILS_NULL("json", tarn_store_write(e, "b", "k", NULL, 2, NULL, &v));
    FAILS_NULL("json", tarn_store_write(e, "b", "k", NULL, 0, NULL, &v));
    FAILS_NULL("ops", tarn_store_patch(e, "b", "k", NULL, 2, NULL, &v, &b));
    FAILS_NULL("ops", tarn_store_patch(e, "b", "k", NULL, 0, NULL, &v, &b));

    /* NULL required out-pointers. */
    FAILS_NULL("out_doc", tarn_store_read(e, "b", "k", NULL, &info));
    FAILS_NULL("out_json", tarn_store_read_all(e, "b", NULL));
    FAILS_NULL("out_json", tarn_store_list(e, "b", 0, NULL));
    FAILS_NULL("out_json", tarn_store_buckets(e, NULL));
    FAILS_NULL("out_version", tarn_store_last_version(e, NULL));
    FAILS_NULL("out_ms", tarn_clock_now(e, NULL));
    CHECK(v == SENTINEL && POISONED(b) && POISONED(info));

    /* A length no object can have is refused before it is used. */
    FAILS(TARN_INVALID_ARGUMENT, tarn_store_write(e, "b", "k", (const uint8_t *)"{}", SIZE_MAX, NULL, &v));
    FAILS(TARN_INVALID_ARGUMENT, tarn_store_patch(e, "b", "k", (const uint8_t *)"[]", SIZE_MAX, NULL, &v, &b));
    CHECK(v == SENTINEL && POISONED(b));

    /* Nothing changed. */
    EXPECT_DOC(e, "b", "k", doc, v0);
    CHECK(last_version(e) == v0);
    tarn_engine_free(e);
}

static void test_invalid_names(void)
{
    tarn_engine *e = manual_engine(0);
    if (e == NULL) {
        return;
    }
    const char *doc = "{\"keep\": [1, 2]}";
    uint64_t v0 = SENTINEL;
    OK(tarn_store_write(e, "good", "k", JSON(doc), NULL, &v0));

    /* Not UTF-8. */
    EVERY_CALL_FAILS(e, "\xff\xfe", "k", true, TARN_INVALID_UTF8);
    EVERY_CALL_FAILS(e, "good", "\xff\xfe", false, TARN_INVALID_UTF8);
    EVERY_CALL_FAILS(e, "good", "ok\xc3", false, TARN_INVALID_UTF8); /* truncated sequence */
    EVERY_CALL_FAILS(e, "\xc0\xaf", "k", true, TARN_INVALID_UTF8);  /* overlong encoding */

    /* Not a bucket name. */
    static const char *const bad_buckets[] = {
        "", " a", "a ", ".a", "a.", "*", "$sys", "$", " ", ".", "a\001b", "a\nb",
    };
    for (size_t i = 0; i < sizeof bad_buckets / sizeof bad_buckets[0]; i++) {
        EVERY_CALL_FAILS(e, bad_buckets[i], "k", true, TARN_INVALID_ARGUMENT);
    }
    /* Not a key. */
    static const char *const bad_keys[] = {"", "*", "a\001b", "\t", "x\x7f"};
    for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++) {
        EVERY_CALL_FAILS(e, "good", bad_keys[i], false, TARN_INVALID_ARGUMENT);
    }

    /* Nothing was created or changed. */
    tarn_buf b;
    EXPECT_JSON(tarn_store_buckets(e, &b), &b, "[\"good\"]");
    EXPECT_JSON(tarn_store_list(e, "good", TARN_LIST_KEYS_ONLY, &b), &b, "[\"k\"]");
    EXPECT_DOC(e, "good", "k", doc, v0);
    CHECK(last_version(e) == v0);
    tarn_engine_free(e);
}

static void test_invalid_json(void)
{
    tarn_engine *e = manual_engine(0);
    if (e == NULL) {
        return;
    }
    const char *doc = "{ \"before\" : 1 }";
    uint64_t v0 = SENTINEL;
    OK(tarn_store_write(e, "b", "k", JSON(doc), NULL, &v0));

    static const char *const bad[] = {
        "{", "[1,]", "\xff", "{} x", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800x\"", "",
        "   ", "{\"a\":1,}", "{\"a\" 1}", "'a'", "NaN", "01", "[1] [2]", "\"\xc3\"",
        "{\"a\":\"\\q\"}", "tru", "/* c */ 1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = SENTINEL;
        if (!FAILS(TARN_INVALID_JSON, tarn_store_write(e, "b", "k", JSON(bad[i]), NULL, &v))) {
            fprintf(stdout, "    the document was: \"%s\"\n", bad[i]);
        }
        CHECK(v == SENTINEL);
        /* Same on an absent key: nothing is created. */
        FAILS(TARN_INVALID_JSON, tarn_store_write(e, "b", "new", JSON(bad[i]), NULL, &v));
        CHECK(v == SENTINEL);
    }
    /* Bytes after a NUL count (the length is what counts, not a terminator); a raw
     * control character inside a string is not JSON. */
    uint64_t v = SENTINEL;
    FAILS(TARN_INVALID_JSON, tarn_store_write(e, "b", "k", (const uint8_t *)"{}\0x", 4, NULL, &v));
    FAILS(TARN_INVALID_JSON, tarn_store_write(e, "b", "k", (const uint8_t *)"\"a\0b\"", 5, NULL, &v));
    CHECK(v == SENTINEL);
    /* Too deep nesting is refused: 200 levels, and already 128 (the parser's limit is
     * 127 levels, although src/store/document.rs says "at most 128"). */
    char deep[2 * 200 + 1];
    memset(deep, '[', 200);
    memset(deep + 200, ']', 200);
    deep[400] = '\0';
    FAILS(TARN_INVALID_JSON, tarn_store_write(e, "b", "k", JSON(deep), NULL, &v));
    FAILS(TARN_INVALID_JSON, tarn_store_write(e, "b", "k", (const uint8_t *)deep + 200 - 128, 2 * 128, NULL, &v));
    CHECK(v == SENTINEL);
    /* The length bounds the text: a valid prefix of a longer buffer is a document. */
    OK(tarn_store_write(e, "b", "prefix", (const uint8_t *)"[1]garbage", 3, NULL, NULL));
    EXPECT_DOC(e, "b", "prefix", "[1]", 0);
    uint64_t vp = last_version(e);

    EXPECT_ABSENT(e, "b", "new");
    EXPECT_DOC(e, "b", "k", doc, v0);
    CHECK(last_version(e) == vp);
    tarn_engine_free(e);
}

static void test_conditional_write_and_remove(void)
{
    tarn_engine *e = manual_engine(0);
    if (e == NULL) {
        return;
    }
    uint64_t v = SENTINEL;
    tarn_write_options fail_if_exists = {.flags = TARN_WRITE_FAIL_IF_EXISTS};

    /* Fail-if-exists. */
    uint64_t v1 = SENTINEL;
    OK(tarn_store_write(e, "c", "once", JSON("{\"first\":true}"), &fail_if_exists, &v1));
    FAILS(TARN_EXISTS, tarn_store_write(e, "c", "once", JSON("{\"first\":false}"), &fail_if_exists, &v));
    CHECK(v == SENTINEL);
    EXPECT_DOC(e, "c", "once", "{\"first\":true}", v1);
    CHECK(last_version(e) == v1); /* a failed write assigns no version */

    /* If-version 0: only if absent. */
    tarn_write_options if_absent = {.flags = TARN_WRITE_IF_VERSION};
    uint64_t v2 = SENTINEL;
    OK(tarn_store_write(e, "c", "cas", JSON("\"v-a\""), &if_absent, &v2));
    CHECK(v2 > v1);
    FAILS(TARN_VERSION_CONFLICT, tarn_store_write(e, "c", "cas", JSON("\"v-b\""), &if_absent, &v));
    CHECK(v == SENTINEL);
    EXPECT_DOC(e, "c", "cas", "\"v-a\"", v2);

    /* If-version n: only if the current version is n. */
    tarn_write_options stale = {.flags = TARN_WRITE_IF_VERSION, .if_version = v2 - 1};
    FAILS(TARN_VERSION_CONFLICT, tarn_store_write(e, "c", "cas", JSON("\"v-b\""), &stale, &v));
    tarn_write_options future = {.flags = TARN_WRITE_IF_VERSION, .if_version = v2 + 100};
    FAILS(TARN_VERSION_CONFLICT, tarn_store_write(e, "c", "cas", JSON("\"v-b\""), &future, &v));
    CHECK(v == SENTINEL);
    EXPECT_DOC(e, "c", "cas", "\"v-a\"", v2);
    tarn_write_options current = {.flags = TARN_WRITE_IF_VERSION, .if_version = v2};
    uint64_t v3 = SENTINEL;
    OK(tarn_store_write(e, "c", "cas", JSON("\"v-b\""), &current, &v3));
    CHECK(v3 > v2);
    EXPECT_DOC(e, "c", "cas", "\"v-b\"", v3);
    /* The same condition again is now stale. */
    FAILS(TARN_VERSION_CONFLICT, tarn_store_write(e, "c", "cas", JSON("\"v-c\""), &current, &v));
    /* A version on an absent key conflicts (its version is 0). */
    tarn_write_options on_absent = {.flags = TARN_WRITE_IF_VERSION, .if_version = v3};
    FAILS(TARN_VERSION_CONFLICT, tarn_store_write(e, "c", "absent", JSON("1"), &on_absent, &v));
    EXPECT_ABSENT(e, "c", "absent");
    /* Without the flag, if_version is ignored. */
    tarn_write_options ignored = {.if_version = 999999};
    uint64_t v4 = SENTINEL;
    OK(tarn_store_write(e, "c", "cas", JSON("\"v-d\""), &ignored, &v4));
    CHECK(v4 > v3);
    /* Both flags: fail-if-exists wins on a present key. */
    tarn_write_options both = {.flags = TARN_WRITE_FAIL_IF_EXISTS | TARN_WRITE_IF_VERSION, .if_version = v4};
    FAILS(TARN_EXISTS, tarn_store_write(e, "c", "cas", JSON("\"v-e\""), &both, &v));
    CHECK(v == SENTINEL);

    /* Unknown flag bits. */
    tarn_write_options unknown = {.flags = 0x80};
    FAILS(TARN_INVALID_ARGUMENT, tarn_store_write(e, "c", "cas", JSON("\"v-x\""), &unknown, &v));
    /* 0x8 is the first bit past TARN_WRITE_EXPIRE_SESSION (0x4, known since ABI 2). */
    unknown.flags = 0x8 | TARN_WRITE_FAIL_IF_EXISTS;
    FAILS(TARN_INVALID_ARGUMENT, tarn_store_write(e, "c", "new", JSON("\"v-x\""), &unknown, &v));
    unknown.flags = 0x80000000u;
    FAILS(TARN_INVALID_ARGUMENT, tarn_store_write(e, "c", "new", JSON("\"v-x\""), &unknown, &v));
    CHECK(v == SENTINEL);
    EXPECT_ABSENT(e, "c", "new");
    EXPECT_DOC(e, "c", "cas", "\"v-d\"", v4);
    CHECK(last_version(e) == v4);

    /* Remove: absent, conditional, unknown flags. */
    FAILS(TARN_NOT_FOUND, tarn_store_remove(e, "c", "absent", NULL, &v));
    FAILS(TARN_NOT_FOUND, tarn_store_remove(e, "never-written", "absent", NULL, &v));
    tarn_remove_options r_stale = {.flags = TARN_REMOVE_IF_VERSION, .if_version = v4 - 1};
    FAILS(TARN_VERSION_CONFLICT, tarn_store_remove(e, "c", "cas", &r_stale, &v));
    tarn_remove_options r_zero = {.flags = TARN_REMOVE_IF_VERSION};
    FAILS(TARN_VERSION_CONFLICT, tarn_store_remove(e, "c", "cas", &r_zero, &v));
    FAILS(TARN_NOT_FOUND, tarn_store_remove(e, "c", "absent", &r_zero, &v));
    tarn_remove_options r_unknown = {.flags = 0x80};
    FAILS(TARN_INVALID_ARGUMENT, tarn_store_remove(e, "c", "cas", &r_unknown, &v));
    r_unknown.flags = TARN_REMOVE_IF_VERSION | 0x2;
    r_unknown.if_version = v4;
    FAILS(TARN_INVALID_ARGUMENT, tarn_store_remove(e, "c", "cas", &r_unknown, &v));
    CHECK(v == SENTINEL);
    EXPECT_DOC(e, "c", "cas", "\"v-d\"", v4);
    CHECK(last_version(e) == v4);

    tarn_remove_options r_current = {.flags = TARN_REMOVE_IF_VERSION, .if_version = v4};
    uint64_t v5 = SENTINEL;
    OK(tarn_store_remove(e, "c", "cas", &r_current, &v5));
    CHECK(v5 > v4 && v5 == last_version(e));
    EXPECT_ABSENT(e, "c", "cas");
    FAILS(TARN_NOT_FOUND, tarn_store_remove(e, "c", "cas", &r_current, &v));
    FAILS(TARN_NOT_FOUND, tarn_store_remove(e, "c", "cas", NULL, NULL));
    CHECK(v == SENTINEL);

    /* Absent again: if-version 0 and fail-if-exists both succeed; versions never repeat. */
    uint64_t v6 = SENTINEL;
    OK(tarn_store_write(e, "c", "cas", JSON("\"again\""), &if_absent, &v6));
    CHECK(v6 > v5);
    OK(tarn_store_remove(e, "c", "cas", NULL, NULL));
    uint64_t v7 = SENTINEL;
    OK(tarn_store_write(e, "c", "cas", JSON("\"again\""), &fail_if_exists, &v7));
    CHECK(v7 > v6 + 1);
    /* A remove with default options (zeroed struct). */
    tarn_remove_options r_default = {.if_version = 12345};
    OK(tarn_store_remove(e, "c", "cas", &r_default, &v));
    CHECK(v > v7 && v == last_version(e));
    tarn_engine_free(e);
}

static void test_patch(void)
{
    const uint64_t t0 = 5000;
    tarn_engine *e = manual_engine(t0);
    if (e == NULL) {
        return;
    }
    tarn_buf b;
    uint64_t v = SENTINEL;
    tarn_doc_info info;

    const char *doc = "{ \"a\": 1, \"b\": [1, 2], \"c\": {\"d\": \"e\"} }";
    uint64_t v0 = SENTINEL;
    OK(tarn_store_write(e, "p", "k", JSON(doc), NULL, &v0));

    /* Failures: each leaves out_version, out_doc and the stored document alone. */
    struct {
        tarn_status want;
        const char *ops;
    } bad[] = {
        {TARN_INVALID_PATCH, "{}"},
        {TARN_INVALID_PATCH, "[{\"op\":\"frobnicate\",\"path\":\"/a\"}]"},
        {TARN_INVALID_PATCH, "[{\"op\":\"add\",\"value\":1}]"},
        {TARN_INVALID_PATCH, "[{\"path\":\"/a\",\"value\":1}]"},
        {TARN_INVALID_PATCH, "[{\"op\":\"add\",\"path\":\"/a\"}]"},
        {TARN_INVALID_PATCH, "[{\"op\":\"move\",\"path\":\"/a\"}]"},
        {TARN_INVALID_PATCH, "[{\"op\":\"add\",\"path\":\"a\",\"value\":1}]"},
        {TARN_INVALID_PATCH, "[1]"},
        {TARN_INVALID_PATCH, "\"add\""},
        {TARN_INVALID_PATCH, "["},
        {TARN_INVALID_PATCH, ""},
        {TARN_INVALID_PATCH, "[] x"},
        {TARN_INVALID_PATCH, "\xff"},
        {TARN_PATCH_PATH_NOT_FOUND, "[{\"op\":\"remove\",\"path\":\"/nope\"}]"},
        {TARN_PATCH_PATH_NOT_FOUND, "[{\"op\":\"replace\",\"path\":\"/x/y\",\"value\":1}]"},
        {TARN_PATCH_PATH_NOT_FOUND, "[{\"op\":\"add\",\"path\":\"/x/y\",\"value\":1}]"},
        {TARN_PATCH_PATH_NOT_FOUND, "[{\"op\":\"remove\",\"path\":\"/b/5\"}]"},
        {TARN_PATCH_PATH_NOT_FOUND, "[{\"op\":\"move\",\"from\":\"/nope\",\"path\":\"/z\"}]"},
        {TARN_PATCH_PATH_NOT_FOUND, "[{\"op\":\"copy\",\"from\":\"/c/nope\",\"path\":\"/z\"}]"},
        /* All or nothing: the first operation would apply, the second cannot. */
        {TARN_PATCH_PATH_NOT_FOUND,
         "[{\"op\":\"replace\",\"path\":\"/a\",\"value\":99},{\"op\":\"remove\",\"path\":\"/nope\"}]"},
        {TARN_PATCH_TEST_FAILED, "[{\"op\":\"test\",\"path\":\"/a\",\"value\":2}]"},
        {TARN_PATCH_TEST_FAILED, "[{\"op\":\"test\",\"path\":\"/c\",\"value\":{\"d\":\"f\"}}]"},
        {TARN_PATCH_TEST_FAILED,
         "[{\"op\":\"add\",\"path\":\"/new\",\"value\":1},{\"op\":\"test\",\"path\":\"/a\",\"value\":\"1\"}]"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = SENTINEL;
        POISON(b);
        if (!FAILS(bad[i].want, tarn_store_patch(e, "p", "k", JSON(bad[i].ops), NULL, &v, &b))) {
            fprintf(stdout, "    the patch was: %s\n", bad[i].ops);
        }
        CHECK(v == SENTINEL && POISONED(b));
    }
    EXPECT_DOC(e, "p", "k", doc, v0);
    CHECK(last_version(e) == v0);

    /* Missing documents. */
    const char *ops = "[{\"op\":\"replace\",\"path\":\"/a\",\"value\":2}]";
    POISON(b);
    FAILS(TARN_NOT_FOUND, tarn_store_patch(e, "p", "missing", JSON(ops), NULL, &v, &b));
    FAILS(TARN_NOT_FOUND, tarn_store_patch(e, "nobody", "k", JSON(ops), NULL, &v, &b));
    CHECK(v == SENTINEL && POISONED(b));
    EXPECT_ABSENT(e, "p", "missing");

    /* Conditional patches. */
    tarn_patch_options stale = {.flags = TARN_PATCH_IF_VERSION, .if_version = v0 - 1};
    FAILS(TARN_VERSION_CONFLICT, tarn_store_patch(e, "p", "k", JSON(ops), &stale, &v, &b));
    tarn_patch_options zero = {.flags = TARN_PATCH_IF_VERSION};
    FAILS(TARN_VERSION_CONFLICT, tarn_store_patch(e, "p", "k", JSON(ops), &zero, &v, &b));
    tarn_patch_options unknown = {.flags = 0x80};
    FAILS(TARN_INVALID_ARGUMENT, tarn_store_patch(e, "p", "k", JSON(ops), &unknown, &v, &b));
    unknown.flags = TARN_PATCH_IF_VERSION | 0x4;
    unknown.if_version = v0;
    FAILS(TARN_INVALID_ARGUMENT, tarn_store_patch(e, "p", "k", JSON(ops), &unknown, &v, &b));
    CHECK(v == SENTINEL && POISONED(b));
    EXPECT_DOC(e, "p", "k", doc, v0);
    CHECK(last_version(e) == v0);

    /* Success with out_doc: the result is re-serialized (compact, key order kept). */
    OK(tarn_clock_advance(e, 7, NULL));
    tarn_patch_options current = {.flags = TARN_PATCH_IF_VERSION, .if_version = v0};
    uint64_t v1 = SENTINEL;
    POISON(b);
    if (OK(tarn_store_patch(e, "p", "k", JSON(ops), &current, &v1, &b))) {
        CHECK(v1 > v0 && v1 == last_version(e));
        CHECK(buf_is(&b, "{\"a\":2,\"b\":[1,2],\"c\":{\"d\":\"e\"}}"));
        /* The reply is exactly what is stored now. */
        tarn_buf stored;
        POISON(info);
        if (OK(tarn_store_read(e, "p", "k", &stored, &info))) {
            CHECK(stored.len == b.len && memcmp(stored.data, b.data, b.len) == 0);
            CHECK(info.version == v1);
            CHECK(info.modified_ms == t0 + 7);
            CHECK(info.expires_ms == 0);
            tarn_buf_free(&stored);
        }
        tarn_buf_free(&b);
    }
    /* The old condition is stale now. */
    FAILS(TARN_VERSION_CONFLICT, tarn_store_patch(e, "p", "k", JSON(ops), &current, NULL, NULL));

    /* Every operation kind, in one patch. */
    const char *all_ops =
        "[{\"op\":\"add\",\"path\":\"/b/-\",\"value\":3},"
        "{\"op\":\"remove\",\"path\":\"/b/0\"},"
        "{\"op\":\"replace\",\"path\":\"/c/d\",\"value\":\"f\"},"
        "{\"op\":\"move\",\"from\":\"/a\",\"path\":\"/m\"},"
        "{\"op\":\"copy\",\"from\":\"/c\",\"path\":\"/c2\"},"
        "{\"op\":\"test\",\"path\":\"/m\",\"value\":2}]";
    uint64_t v2 = SENTINEL;
    POISON(b);
    EXPECT_JSON(tarn_store_patch(e, "p", "k", JSON(all_ops), NULL, &v2, &b), &b,
                "{\"c\":{\"d\":\"f\"},\"b\":[2,3],\"m\":2,\"c2\":{\"d\":\"f\"}}");
    CHECK(v2 > v1);
    EXPECT_DOC(e, "p", "k", "{\"c\":{\"d\":\"f\"},\"b\":[2,3],\"m\":2,\"c2\":{\"d\":\"f\"}}", v2);

    /* TARN_PATCH_REMOVE_DATA_FROM_REPLY: *out_doc is set empty (and freeing it does
     * nothing). */
    tarn_patch_options no_data = {.flags = TARN_PATCH_REMOVE_DATA_FROM_REPLY};
    uint64_t v3 = SENTINEL;
    POISON(b);
    if (OK(tarn_store_patch(e, "p", "k", JSON("[{\"op\":\"add\",\"path\":\"/n\",\"value\":null}]"),
                            &no_data, &v3, &b))) {
        CHECK(buf_zeroed(&b));
        tarn_buf_free(&b);
        CHECK(buf_zeroed(&b));
        CHECK(v3 > v2);
    }
    EXPECT_DOC(e, "p", "k", "{\"c\":{\"d\":\"f\"},\"b\":[2,3],\"m\":2,\"c2\":{\"d\":\"f\"},\"n\":null}", v3);
    /* Both flags together. */
    tarn_patch_options both = {.flags = TARN_PATCH_REMOVE_DATA_FROM_REPLY | TARN_PATCH_IF_VERSION, .if_version = v3};
    uint64_t v4 = SENTINEL;
    POISON(b);
    OK(tarn_store_patch(e, "p", "k", JSON("[{\"op\":\"remove\",\"path\":\"/n\"}]"), &both, &v4, &b));
    CHECK(buf_zeroed(&b));
    CHECK(v4 > v3);
    /* out_version and out_doc may both be NULL. */
    OK(tarn_store_patch(e, "p", "k", JSON("[{\"op\":\"replace\",\"path\":\"/m\",\"value\":3}]"), NULL, NULL, NULL));
    uint64_t v5 = last_version(e);
    CHECK(v5 > v4);
    EXPECT_DOC(e, "p", "k", "{\"c\":{\"d\":\"f\"},\"b\":[2,3],\"m\":3,\"c2\":{\"d\":\"f\"}}", v5);
    /* An empty operation list is a change too: a new version (re-serialized bytes). */
    OK(tarn_store_write(e, "p", "ws", JSON(" [ 1 ] "), NULL, NULL));
    uint64_t v6 = SENTINEL;
    OK(tarn_store_patch(e, "p", "ws", JSON("[]"), NULL, &v6, NULL));
    EXPECT_DOC(e, "p", "ws", "[1]", v6);
    /* A patch may replace the whole document. */
    EXPECT_JSON(tarn_store_patch(e, "p", "ws", JSON("[{\"op\":\"replace\",\"path\":\"\",\"value\":\"all\"}]"),
                                 NULL, NULL, &b),
                &b, "\"all\"");
    tarn_engine_free(e);
}

static void test_listing(void)
{
    const uint64_t t0 = 100;
    tarn_engine *e = manual_engine(t0);
    if (e == NULL) {
        return;
    }
    tarn_buf b;
    uint64_t vc = 0, va = 0, vb = 0, vq = 0;
    /* Written out of order; listings are sorted by key (byte order). */
    OK(tarn_store_write(e, "fruit", "cherry", JSON("{\"c\": 3}"), NULL, &vc));
    OK(tarn_clock_advance(e, 1, NULL));
    OK(tarn_store_write(e, "fruit", "apple", JSON(" [1, 2] "), NULL, &va));
    tarn_write_options ttl = {.ttl_ms = 1000};
    OK(tarn_store_write(e, "fruit", "banana", JSON("\"b\""), &ttl, &vb));
    OK(tarn_store_write(e, "fruit", "Quote\"\\", JSON("null"), NULL, &vq));
    OK(tarn_store_write(e, "veg", "kale", JSON("true"), NULL, NULL));
    OK(tarn_store_write(e, "Veg", "kale", JSON("false"), NULL, NULL));

    EXPECT_JSON(tarn_store_list(e, "fruit", TARN_LIST_KEYS_ONLY, &b), &b,
                "[\"Quote\\\"\\\\\",\"apple\",\"banana\",\"cherry\"]");
    EXPECT_JSON(tarn_store_list(e, "fruit", 0, &b), &b,
                "[{\"key\":\"Quote\\\"\\\\\",\"value\":null},"
                "{\"key\":\"apple\",\"value\": [1, 2] },"
                "{\"key\":\"banana\",\"value\":\"b\"},"
                "{\"key\":\"cherry\",\"value\":{\"c\": 3}}]");
    char want[1024];
    snprintf(want, sizeof want,
             "[{\"key\":\"Quote\\\"\\\\\",\"version\":%" PRIu64 ",\"modified_ms\":101,\"expires_ms\":null,\"value\":null},"
             "{\"key\":\"apple\",\"version\":%" PRIu64 ",\"modified_ms\":101,\"expires_ms\":null,\"value\": [1, 2] },"
             "{\"key\":\"banana\",\"version\":%" PRIu64 ",\"modified_ms\":101,\"expires_ms\":1101,\"value\":\"b\"},"
             "{\"key\":\"cherry\",\"version\":%" PRIu64 ",\"modified_ms\":100,\"expires_ms\":null,\"value\":{\"c\": 3}}]",
             vq, va, vb, vc);
    EXPECT_JSON(tarn_store_read_all(e, "fruit", &b), &b, want);
    EXPECT_JSON(tarn_store_buckets(e, &b), &b, "[\"Veg\",\"fruit\",\"veg\"]");

    /* A bucket nobody wrote: empty results, not errors. */
    EXPECT_JSON(tarn_store_list(e, "nobody", 0, &b), &b, "[]");
    EXPECT_JSON(tarn_store_list(e, "nobody", TARN_LIST_KEYS_ONLY, &b), &b, "[]");
    EXPECT_JSON(tarn_store_read_all(e, "nobody", &b), &b, "[]");

    /* Unknown list flags. */
    POISON(b);
    FAILS(TARN_INVALID_ARGUMENT, tarn_store_list(e, "fruit", 0x80, &b));
    FAILS(TARN_INVALID_ARGUMENT, tarn_store_list(e, "fruit", TARN_LIST_KEYS_ONLY | 0x2, &b));
    CHECK(POISONED(b));

    /* A bucket whose documents are all removed is no longer listed. */
    OK(tarn_store_remove(e, "veg", "kale", NULL, NULL));
    EXPECT_JSON(tarn_store_buckets(e, &b), &b, "[\"Veg\",\"fruit\"]");
    EXPECT_JSON(tarn_store_list(e, "veg", 0, &b), &b, "[]");
    /* Failed writes to a new bucket do not make it appear. */
    tarn_write_options conflict = {.flags = TARN_WRITE_IF_VERSION, .if_version = 77};
    FAILS(TARN_VERSION_CONFLICT, tarn_store_write(e, "ghost", "k", JSON("1"), &conflict, NULL));
    FAILS(TARN_NOT_FOUND, tarn_store_remove(e, "ghost2", "k", NULL, NULL));
    EXPECT_JSON(tarn_store_buckets(e, &b), &b, "[\"Veg\",\"fruit\"]");
    tarn_engine_free(e);
}

static void test_ttl(void)
{
    const uint64_t t0 = UINT64_C(1000000);
    tarn_engine *e = manual_engine(t0);
    if (e == NULL) {
        return;
    }
    tarn_buf b;
    tarn_doc_info info;
    uint64_t v = SENTINEL;

    tarn_write_options ttl = {.ttl_ms = 1000};
    uint64_t vt = SENTINEL;
    OK(tarn_store_write(e, "s", "tok", JSON("{\"t\":1}"), &ttl, &vt));
    OK(tarn_store_write(e, "s", "perm", JSON("{\"p\":1}"), NULL, NULL));
    OK(tarn_store_write(e, "only-ttl", "x", JSON("0"), &ttl, NULL));
    POISON(info);
    if (OK(tarn_store_read(e, "s", "tok", &b, &info))) {
        CHECK(info.version == vt);
        CHECK(info.modified_ms == t0);
        CHECK(info.expires_ms == t0 + 1000);
        tarn_buf_free(&b);
    }
    POISON(info);
    if (OK(tarn_store_read(e, "s", "perm", &b, &info))) {
        CHECK(info.expires_ms == 0);
        tarn_buf_free(&b);
    }
    /* A TTL not yet due does not keep settle waiting. */
    OK(tarn_engine_settle(e, 10000));

    /* One millisecond before: still there. */
    OK(tarn_clock_advance(e, 999, NULL));
    EXPECT_DOC(e, "s", "tok", "{\"t\":1}", vt);
    /* A patch keeps the TTL and updates modified_ms. */
    uint64_t vp = SENTINEL;
    OK(tarn_store_patch(e, "s", "tok", JSON("[{\"op\":\"add\",\"path\":\"/u\",\"value\":2}]"), NULL, &vp, NULL));
    POISON(info);
    if (OK(tarn_store_read(e, "s", "tok", &b, &info))) {
        CHECK(info.version == vp && vp > vt);
        CHECK(info.modified_ms == t0 + 999);
        CHECK(info.expires_ms == t0 + 1000);
        tarn_buf_free(&b);
    }

    /* At the deadline it is gone at once for every read, before any sweep. */
    OK(tarn_clock_advance(e, 1, NULL));
    EXPECT_ABSENT(e, "s", "tok");
    EXPECT_JSON(tarn_store_list(e, "s", TARN_LIST_KEYS_ONLY, &b), &b, "[\"perm\"]");
    EXPECT_JSON(tarn_store_list(e, "s", 0, &b), &b, "[{\"key\":\"perm\",\"value\":{\"p\":1}}]");
    EXPECT_JSON(tarn_store_buckets(e, &b), &b, "[\"s\"]");
    POISON(b);
    FAILS(TARN_NOT_FOUND, tarn_store_patch(e, "s", "tok", JSON("[]"), NULL, &v, &b));
    FAILS(TARN_NOT_FOUND, tarn_store_remove(e, "s", "tok", NULL, &v));
    CHECK(v == SENTINEL && POISONED(b));

    /* Let the sweep run; afterwards the key is gone for good. */
    OK(tarn_engine_settle(e, 0));
    EXPECT_ABSENT(e, "s", "tok");
    EXPECT_JSON(tarn_store_list(e, "s", TARN_LIST_KEYS_ONLY, &b), &b, "[\"perm\"]");
    EXPECT_JSON(tarn_store_read_all(e, "only-ttl", &b), &b, "[]");
    EXPECT_JSON(tarn_store_buckets(e, &b), &b, "[\"s\"]");

    /* An expired key is absent for conditional writes too. */
    tarn_write_options if_absent = {.flags = TARN_WRITE_IF_VERSION | TARN_WRITE_FAIL_IF_EXISTS, .ttl_ms = 500};
    uint64_t vn = SENTINEL;
    OK(tarn_store_write(e, "s", "tok", JSON("\"new\""), &if_absent, &vn));
    CHECK(vn > vp);
    POISON(info);
    if (OK(tarn_store_read(e, "s", "tok", &b, &info))) {
        CHECK(info.expires_ms == t0 + 1000 + 500);
        tarn_buf_free(&b);
    }
    /* A rewrite with a longer TTL moves the deadline; a plain write makes it
     * permanent again. */
    tarn_write_options longer = {.ttl_ms = 5000};
    OK(tarn_store_write(e, "s", "tok", JSON("\"longer\""), &longer, NULL));
    OK(tarn_clock_advance(e, 600, NULL)); /* past the first deadline */
    OK(tarn_engine_settle(e, 0));
    EXPECT_DOC(e, "s", "tok", "\"longer\"", 0);
    OK(tarn_store_write(e, "s", "tok", JSON("\"forever\""), NULL, NULL));
    POISON(info);
    if (OK(tarn_store_read(e, "s", "tok", &b, &info))) {
        CHECK(info.expires_ms == 0);
        tarn_buf_free(&b);
    }
    OK(tarn_clock_set(e, t0 + 1000000)); /* past every deadline ever set */
    OK(tarn_engine_settle(e, 0));
    EXPECT_DOC(e, "s", "tok", "\"forever\"", 0);
    EXPECT_JSON(tarn_store_list(e, "s", TARN_LIST_KEYS_ONLY, &b), &b, "[\"perm\",\"tok\"]");

    /* tarn_clock_set past a deadline expires too. */
    OK(tarn_store_write(e, "s", "short", JSON("1"), &ttl, NULL));
    OK(tarn_clock_set(e, clock_now(e) + 1000));
    EXPECT_ABSENT(e, "s", "short");
    OK(tarn_engine_settle(e, 0));
    EXPECT_JSON(tarn_store_list(e, "s", TARN_LIST_KEYS_ONLY, &b), &b, "[\"perm\",\"tok\"]");
    tarn_engine_free(e);
}

static tarn_engine *bounded_engine(void)
{
    tarn_engine_builder *bl = tarn_engine_builder_new();
    if (!CHECK(bl != NULL)) {
        return NULL;
    }
    OK(tarn_engine_builder_manual_clock(bl, 0));
    OK(tarn_engine_builder_workers(bl, 1));
    OK(tarn_engine_builder_queue_capacity(bl, 8));
    OK(tarn_engine_builder_max_bucket_bytes(bl, 8));
    OK(tarn_engine_builder_max_key_bytes(bl, 8));
    OK(tarn_engine_builder_max_document_bytes(bl, 16));
    tarn_engine *e = NULL;
    OK(tarn_engine_builder_build(bl, &e));
    tarn_engine_builder_free(bl);
    CHECK(e != NULL);
    return e;
}

static void test_limits(void)
{
    tarn_engine *e = bounded_engine();
    if (e == NULL) {
        return;
    }
    uint64_t v = SENTINEL;
    tarn_buf b;

    /* At the bounds: accepted. */
    uint64_t v0 = SENTINEL;
    OK(tarn_store_write(e, "12345678", "abcdefgh", JSON("\"123456789012\""), NULL, &v0)); /* 14 B */
    OK(tarn_store_write(e, "b", "k", JSON("[1,2,3,4,5,6,7]"), NULL, NULL));               /* 15 B */
    OK(tarn_store_write(e, "b", "k16", JSON("[1,2,3,4,5,6,77]"), NULL, NULL));            /* 16 B */
    OK(tarn_store_write(e, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", "k", JSON("1"), NULL, NULL)); /* 8 B */

    /* One byte over: TARN_TOO_LARGE, for names on every call (a read says why it
     * missed), for documents on writes. */
    EVERY_CALL_FAILS(e, "123456789", "k", true, TARN_TOO_LARGE);
    EVERY_CALL_FAILS(e, "b", "abcdefghi", false, TARN_TOO_LARGE);
    EVERY_CALL_FAILS(e, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", "k", true, TARN_TOO_LARGE); /* bytes, not characters */
    FAILS(TARN_TOO_LARGE, tarn_store_write(e, "b", "k", JSON("[1,2,3,4,5,6,777]"), NULL, &v)); /* 17 B */
    FAILS(TARN_TOO_LARGE, tarn_store_write(e, "b", "new", JSON("\"a very long document\""), NULL, &v));
    CHECK(v == SENTINEL);
    /* A patch whose result is over the bound. */
    POISON(b);
    FAILS(TARN_TOO_LARGE, tarn_store_patch(e, "b", "k", JSON("[{\"op\":\"add\",\"path\":\"/-\",\"value\":8}]"), NULL, &v, &b));
    CHECK(v == SENTINEL && POISONED(b));

    EXPECT_DOC(e, "b", "k", "[1,2,3,4,5,6,7]", 0);
    EXPECT_DOC(e, "12345678", "abcdefgh", "\"123456789012\"", v0);
    EXPECT_ABSENT(e, "b", "new");
    /* A patch that shrinks is fine. */
    EXPECT_JSON(tarn_store_patch(e, "b", "k", JSON("[{\"op\":\"remove\",\"path\":\"/0\"}]"), NULL, NULL, &b),
                &b, "[2,3,4,5,6,7]");
    tarn_engine_free(e);
}

static void test_capacity(void)
{
    tarn_engine_builder *bl = tarn_engine_builder_new();
    if (!CHECK(bl != NULL)) {
        return;
    }
    OK(tarn_engine_builder_manual_clock(bl, 0));
    OK(tarn_engine_builder_store_capacity_bytes(bl, 40)); /* bytes of keys + documents */
    tarn_engine *e = NULL;
    OK(tarn_engine_builder_build(bl, &e));
    tarn_engine_builder_free(bl);
    if (!CHECK(e != NULL)) {
        return;
    }
    uint64_t v = SENTINEL;
    tarn_buf b;
    const char *d18 = "\"1234567890123456\""; /* 18 bytes */
    uint64_t v1 = SENTINEL;
    OK(tarn_store_write(e, "c", "k1", JSON(d18), NULL, &v1)); /* 20 */
    OK(tarn_store_write(e, "c", "k2", JSON(d18), NULL, NULL)); /* 40: exactly full */
    uint64_t vfull = last_version(e);

    FAILS(TARN_FULL, tarn_store_write(e, "c", "k3", JSON("1"), NULL, &v));
    FAILS(TARN_FULL, tarn_store_write(e, "other", "k", JSON("1"), NULL, &v));
    FAILS(TARN_FULL, tarn_store_write(e, "c", "k1", JSON("\"12345678901234567\""), NULL, &v)); /* grows by 1 */
    CHECK(v == SENTINEL);
    POISON(b);
    FAILS(TARN_FULL, tarn_store_patch(e, "c", "k1", JSON("[{\"op\":\"replace\",\"path\":\"\",\"value\":\"12345678901234567\"}]"),
                                      NULL, &v, &b));
    CHECK(v == SENTINEL && POISONED(b));
    EXPECT_DOC(e, "c", "k1", d18, v1);
    EXPECT_ABSENT(e, "c", "k3");
    CHECK(last_version(e) == vfull);
    EXPECT_JSON(tarn_store_buckets(e, &b), &b, "[\"c\"]");

    /* Same size and smaller writes still fit; freed bytes can be used again. */
    OK(tarn_store_write(e, "c", "k1", JSON("\"abcdefghijklmnop\""), NULL, NULL)); /* same size: 40 */
    OK(tarn_store_write(e, "c", "k1", JSON("1"), NULL, NULL));                    /* 3 + 20 = 23 */
    OK(tarn_store_write(e, "c", "k3", JSON("\"1234567890123\""), NULL, NULL));    /* + 17 = 40 */
    FAILS(TARN_FULL, tarn_store_write(e, "c", "k4", JSON("1"), NULL, NULL));
    OK(tarn_store_remove(e, "c", "k2", NULL, NULL));           /* 20 */
    OK(tarn_store_write(e, "c", "k4", JSON(d18), NULL, NULL)); /* 40 */
    FAILS(TARN_FULL, tarn_store_write(e, "c", "k5", JSON("1"), NULL, NULL));

    /* Expired documents give their bytes back once swept. */
    OK(tarn_store_remove(e, "c", "k4", NULL, NULL)); /* 20 */
    tarn_write_options ttl = {.ttl_ms = 10};
    OK(tarn_store_write(e, "c", "t", JSON("\"12345678901234567\""), &ttl, NULL)); /* 40 */
    OK(tarn_clock_advance(e, 10, NULL));
    OK(tarn_engine_settle(e, 0));
    EXPECT_ABSENT(e, "c", "t");
    OK(tarn_store_write(e, "c", "k5", JSON(d18), NULL, NULL)); /* 40 again */
    EXPECT_JSON(tarn_store_list(e, "c", TARN_LIST_KEYS_ONLY, &b), &b, "[\"k1\",\"k3\",\"k5\"]");
    tarn_engine_free(e);
}

/* tarn_change_meta (ABI 2): the last field of the write, patch and remove options.
 * A malformed one is refused before anything changes. */
static void test_change_meta(void)
{
    tarn_engine *e = manual_engine(0);
    if (e == NULL) {
        return;
    }
    const char *doc = "{\"meta\": [\"kept\"]}";
    uint64_t v0 = SENTINEL;
    OK(tarn_store_write(e, "m", "k", JSON(doc), NULL, &v0));
    uint64_t v = SENTINEL;
    tarn_buf b;

    static const struct {
        tarn_status want;
        const char *mention; /* what the message names */
        tarn_change_meta meta;
    } bad[] = {
        {TARN_INVALID_UTF8, "request_id", {.request_id = "\xff\xfe"}},
        {TARN_INVALID_UTF8, "request_id", {.request_id = "req-\xc3"}},  /* truncated */
        {TARN_INVALID_UTF8, "request_id", {.request_id = "\xc0\xaf"}},  /* overlong */
        {TARN_INVALID_JSON, "user_data", {.user_data = (const uint8_t *)"{bad", .user_data_len = 4}},
        {TARN_INVALID_JSON, "user_data", {.user_data = (const uint8_t *)"", .user_data_len = 0}},
        {TARN_INVALID_JSON, "user_data", {.user_data = (const uint8_t *)"{} x", .user_data_len = 4}},
        {TARN_INVALID_JSON, "user_data", {.user_data = (const uint8_t *)"\"\xff\"", .user_data_len = 3}},
        {TARN_INVALID_JSON, "user_data", {.user_data = (const uint8_t *)"[1,]", .user_data_len = 4}},
        /* The length counts, not a terminator: "1" followed by a NUL is not JSON. */
        {TARN_INVALID_JSON, "user_data", {.user_data = (const uint8_t *)"1\0", .user_data_len = 2}},
        /* A valid request id does not save an invalid user_data, and the reverse. */
        {TARN_INVALID_JSON, "user_data",
         {.request_id = "ok", .user_data = (const uint8_t *)"nope", .user_data_len = 4}},
        {TARN_INVALID_UTF8, "request_id",
         {.request_id = "\xff", .user_data = (const uint8_t *)"{}", .user_data_len = 2}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tarn_write_options wo = {.meta = bad[i].meta};
        tarn_patch_options po = {.meta = bad[i].meta};
        tarn_remove_options ro = {.meta = bad[i].meta};
        bool all = true;
        v = SENTINEL;
        all &= FAILS_SAYING(bad[i].want, bad[i].mention,
                            tarn_store_write(e, "m", "k", JSON("{\"changed\":1}"), &wo, &v));
        all &= FAILS_SAYING(bad[i].want, bad[i].mention,
                            tarn_store_write(e, "m", "new", JSON("1"), &wo, &v));
        wo.flags = TARN_WRITE_FAIL_IF_EXISTS; /* with other flags too */
        wo.ttl_ms = 1000;
        all &= FAILS_SAYING(bad[i].want, bad[i].mention,
                            tarn_store_write(e, "m", "new", JSON("1"), &wo, &v));
        POISON(b);
        all &= FAILS_SAYING(bad[i].want, bad[i].mention,
                            tarn_store_patch(e, "m", "k", JSON("[]"), &po, &v, &b));
        all &= CHECK(POISONED(b));
        all &= FAILS_SAYING(bad[i].want, bad[i].mention, tarn_store_remove(e, "m", "k", &ro, &v));
        all &= CHECK(v == SENTINEL);
        if (!all) {
            fprintf(stdout, "    bad meta #%zu\n", i);
        }
    }
    EXPECT_DOC(e, "m", "k", doc, v0);
    EXPECT_ABSENT(e, "m", "new");
    CHECK(last_version(e) == v0);

    /* TARN_WRITE_EXPIRE_SESSION needs the writing session in meta.session. */
    tarn_write_options no_session = {.flags = TARN_WRITE_EXPIRE_SESSION};
    FAILS_SAYING(TARN_INVALID_ARGUMENT, "session",
                 tarn_store_write(e, "m", "k", JSON("{\"changed\":2}"), &no_session, &v));
    FAILS_SAYING(TARN_INVALID_ARGUMENT, "session",
                 tarn_store_write(e, "m", "new", JSON("2"), &no_session, &v));
    no_session.meta.request_id = "req"; /* other meta does not stand in for a session */
    FAILS(TARN_INVALID_ARGUMENT, tarn_store_write(e, "m", "new", JSON("2"), &no_session, &v));
    CHECK(v == SENTINEL);
    /* An id nobody opened, and one that was opened and closed: TARN_NOT_FOUND. */
    tarn_write_options unknown = {.flags = TARN_WRITE_EXPIRE_SESSION, .meta = {.session = 987654321}};
    FAILS(TARN_NOT_FOUND, tarn_store_write(e, "m", "k", JSON("{\"changed\":3}"), &unknown, &v));
    FAILS(TARN_NOT_FOUND, tarn_store_write(e, "m", "new", JSON("3"), &unknown, &v));
    unknown.meta.session = UINT64_MAX;
    FAILS(TARN_NOT_FOUND, tarn_store_write(e, "m", "new", JSON("3"), &unknown, &v));
    uint64_t s = SENTINEL;
    if (OK(tarn_session_open(e, "meta-test", 0, &s))) {
        OK(tarn_session_close(e, s));
        tarn_write_options closed = {.flags = TARN_WRITE_EXPIRE_SESSION, .meta = {.session = s}};
        FAILS(TARN_NOT_FOUND, tarn_store_write(e, "m", "k", JSON("{\"changed\":4}"), &closed, &v));
        FAILS(TARN_NOT_FOUND, tarn_store_write(e, "m", "new", JSON("4"), &closed, &v));
    }
    CHECK(v == SENTINEL);
    /* Without the flag too: a change is attributed only to a session that is open. */
    static const uint64_t not_open[] = {987654321, UINT64_MAX, 0 /* replaced by s */};
    for (size_t i = 0; i < sizeof not_open / sizeof not_open[0]; i++) {
        uint64_t id = not_open[i] != 0 ? not_open[i] : s;
        tarn_write_options w_as = {.meta = {.session = id}};
        tarn_patch_options p_as = {.meta = {.session = id}};
        tarn_remove_options r_as = {.meta = {.session = id}};
        POISON(b);
        FAILS(TARN_NOT_FOUND, tarn_store_write(e, "m", "k", JSON("{\"changed\":5}"), &w_as, &v));
        FAILS(TARN_NOT_FOUND, tarn_store_write(e, "m", "new", JSON("5"), &w_as, &v));
        FAILS(TARN_NOT_FOUND, tarn_store_patch(e, "m", "k", JSON("[]"), &p_as, &v, &b));
        FAILS(TARN_NOT_FOUND, tarn_store_remove(e, "m", "k", &r_as, &v));
        CHECK(v == SENTINEL && POISONED(b));
    }
    EXPECT_DOC(e, "m", "k", doc, v0);
    EXPECT_ABSENT(e, "m", "new");
    CHECK(last_version(e) == v0);
    /* Unknown flag bits next to the new one are still refused. */
    tarn_write_options past = {.flags = TARN_WRITE_EXPIRE_SESSION << 1};
    FAILS(TARN_INVALID_ARGUMENT, tarn_store_write(e, "m", "k", JSON("5"), &past, &v));
    CHECK(v == SENTINEL);

    /* A request id is bounded like a key (1024 bytes by default). */
    char long_id[1026];
    memset(long_id, 'r', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0'; /* 1025 bytes */
    tarn_write_options too_long = {.meta = {.request_id = long_id}};
    FAILS(TARN_TOO_LARGE, tarn_store_write(e, "m", "k", JSON("6"), &too_long, &v));
    CHECK(v == SENTINEL);
    EXPECT_DOC(e, "m", "k", doc, v0);
    CHECK(last_version(e) == v0);
    long_id[1024] = '\0'; /* 1024 bytes: at the bound */
    OK(tarn_store_write(e, "m", "long-id", JSON("6"), &too_long, NULL));

    /* Well-formed meta on every change: accepted, and the documents are as written
     * (the meta goes to listeners, not into the store). */
    tarn_change_meta good = {.request_id = "req-1", .user_data = (const uint8_t *)" {\"who\": \"c\"} ",
                             .user_data_len = 14};
    tarn_write_options gw = {.meta = good};
    uint64_t v1 = SENTINEL;
    OK(tarn_store_write(e, "m", "k", JSON("{\"n\": 1}"), &gw, &v1));
    EXPECT_DOC(e, "m", "k", "{\"n\": 1}", v1);
    tarn_patch_options gp = {.flags = TARN_PATCH_IF_VERSION, .if_version = v1, .meta = good};
    uint64_t v2 = SENTINEL;
    EXPECT_JSON(tarn_store_patch(e, "m", "k", JSON("[{\"op\":\"replace\",\"path\":\"/n\",\"value\":2}]"), &gp,
                                 &v2, &b),
                &b, "{\"n\":2}");
    CHECK(v2 > v1);
    /* user_data NULL with a length: no user data (the length is ignored). */
    tarn_remove_options gr = {.flags = TARN_REMOVE_IF_VERSION, .if_version = v2,
                              .meta = {.request_id = "", .user_data = NULL, .user_data_len = 99}};
    uint64_t v3 = SENTINEL;
    OK(tarn_store_remove(e, "m", "k", &gr, &v3));
    CHECK(v3 > v2 && v3 == last_version(e));
    EXPECT_ABSENT(e, "m", "k");

    /* TARN_WRITE_EXPIRE_SESSION with an open session: the key lives until the session
     * closes (test_bus.c checks the events). */
    uint64_t owner = SENTINEL;
    if (OK(tarn_session_open(e, "owner", 0, &owner))) {
        tarn_write_options ws = {.flags = TARN_WRITE_EXPIRE_SESSION, .meta = {.session = owner}};
        OK(tarn_store_write(e, "m", "owned", JSON("true"), &ws, NULL));
        EXPECT_DOC(e, "m", "owned", "true", 0);
        OK(tarn_session_close(e, owner));
        OK(tarn_engine_settle(e, 0));
        EXPECT_ABSENT(e, "m", "owned");
    }
    tarn_engine_free(e);

    /* user_data is bounded like a document (16 bytes here, counted compact). */
    e = bounded_engine();
    if (e == NULL) {
        return;
    }
    OK(tarn_store_write(e, "b", "k", JSON("1"), NULL, &v0));
    tarn_write_options big = {.meta = {.user_data = (const uint8_t *)"[1,2,3,4,5,6,777]", .user_data_len = 17}};
    v = SENTINEL;
    FAILS(TARN_TOO_LARGE, tarn_store_write(e, "b", "k", JSON("2"), &big, &v));
    CHECK(v == SENTINEL);
    EXPECT_DOC(e, "b", "k", "1", v0);
    big.meta.user_data = (const uint8_t *)"[1, 2, 3, 4, 5, 6, 77]"; /* 16 bytes once compact */
    big.meta.user_data_len = strlen((const char *)big.meta.user_data);
    OK(tarn_store_write(e, "b", "k", JSON("2"), &big, &v));
    EXPECT_DOC(e, "b", "k", "2", v);
    tarn_engine_free(e);
}

static void test_closed(void)
{
    tarn_engine *e = manual_engine(777);
    if (e == NULL) {
        return;
    }
    const char *doc = "{\"closed\": false}";
    uint64_t v0 = SENTINEL;
    OK(tarn_store_write(e, "b", "k", JSON(doc), NULL, &v0));
    tarn_buf kept;
    POISON(kept);
    OK(tarn_store_read(e, "b", "k", &kept, NULL));

    OK(tarn_engine_close(e));
    OK(tarn_engine_close(e)); /* twice is harmless */

    uint64_t v = SENTINEL;
    tarn_buf b;
    tarn_doc_info info;
    POISON(b);
    POISON(info);
    EVERY_CALL_FAILS(e, "b", "k", true, TARN_CLOSED);
    FAILS(TARN_CLOSED, tarn_store_read(e, "b", "k", &b, &info));
    FAILS(TARN_CLOSED, tarn_store_read(e, "b", "missing", &b, &info));
    FAILS(TARN_CLOSED, tarn_store_read_all(e, "b", &b));
    FAILS(TARN_CLOSED, tarn_store_list(e, "b", TARN_LIST_KEYS_ONLY, &b));
    FAILS(TARN_CLOSED, tarn_store_buckets(e, &b));
    FAILS(TARN_CLOSED, tarn_store_write(e, "b", "k", JSON("1"), NULL, &v));
    tarn_write_options wo = {.flags = TARN_WRITE_IF_VERSION, .if_version = v0};
    FAILS(TARN_CLOSED, tarn_store_write(e, "b", "k", JSON("1"), &wo, &v));
    FAILS(TARN_CLOSED, tarn_store_patch(e, "b", "k", JSON("[]"), NULL, &v, &b));
    FAILS(TARN_CLOSED, tarn_store_remove(e, "b", "k", NULL, &v));
    FAILS(TARN_CLOSED, tarn_engine_settle(e, 0));
    FAILS(TARN_CLOSED, tarn_engine_settle(e, 1000));
    FAILS(TARN_CLOSED, tarn_clock_set(e, 1000));
    FAILS(TARN_CLOSED, tarn_clock_advance(e, 1, &v));
    CHECK(v == SENTINEL && POISONED(b) && POISONED(info));

    /* The header: "Afterwards every call on it fails with TARN_CLOSED". */
    tarn_status st = tarn_store_last_version(e, &v);
    CHECK(st == TARN_CLOSED && v == SENTINEL);
    v = SENTINEL;
    st = tarn_clock_now(e, &v);
    CHECK(st == TARN_CLOSED && v == SENTINEL);

    OK(tarn_engine_close(e));
    CHECK(buf_is(&kept, doc)); /* buffers read before the close stay valid */
    tarn_engine_free(e);
    CHECK(buf_is(&kept, doc));
    tarn_buf_free(&kept);
}

/* ------------------------------------------------------------------------------------
 * Threads.
 * ---------------------------------------------------------------------------------- */

#define RACERS 8

struct racer {
    const tarn_engine *engine;
    pthread_barrier_t *start;
    int index;
    tarn_status status;
    uint64_t version;
    bool message_ok;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    /* A new thread has no last error. */
    CHECK(strcmp(tarn_last_error(), "") == 0);
    char json[32];
    snprintf(json, sizeof json, "{\"winner\":%d}", r->index);
    tarn_write_options o = {.flags = TARN_WRITE_FAIL_IF_EXISTS};
    r->version = SENTINEL;
    pthread_barrier_wait(r->start);
    r->status = tarn_store_write(r->engine, "race", "prize", JSON(json), &o, &r->version);
    /* The message is per thread: the winner's is still empty. */
    const char *msg = tarn_last_error();
    r->message_ok = r->status == TARN_OK ? msg[0] == '\0' : msg[0] != '\0';
    return NULL;
}

#define WORKERS 4
#define ROUNDS 1000

struct worker {
    const tarn_engine *engine;
    pthread_barrier_t *start;
    int index;
    int bad;            /* rounds that were not consistent */
    uint64_t last;      /* version of the last write */
    char first_bad[160]; /* what went wrong first */
};

static void *work(void *arg)
{
    struct worker *w = arg;
    char key[16];
    snprintf(key, sizeof key, "t%d", w->index);
    uint64_t prev = 0;
    pthread_barrier_wait(w->start);
    for (int n = 0; n < ROUNDS; n++) {
        char json[64];
        snprintf(json, sizeof json, "{\"thread\":%d,\"n\":%d}", w->index, n);
        uint64_t v = SENTINEL;
        tarn_status st = tarn_store_write(w->engine, "work", key, JSON(json), NULL, &v);
        tarn_buf b = {NULL, 0, NULL};
        tarn_doc_info info = {0, 0, 0};
        tarn_status rs = tarn_store_read(w->engine, "work", key, &b, &info);
        bool ok = st == TARN_OK && rs == TARN_OK && v > prev && info.version == v &&
                  buf_is(&b, json);
        /* Read a neighbour's key too (written concurrently): it is absent or whole. */
        char other[16];
        snprintf(other, sizeof other, "t%d", (w->index + 1) % WORKERS);
        tarn_buf ob = {NULL, 0, NULL};
        tarn_status os = tarn_store_read(w->engine, "work", other, &ob, NULL);
        ok = ok && (os == TARN_NOT_FOUND ||
                    (os == TARN_OK && ob.len > 2 && ob.data[0] == '{' && ob.data[ob.len - 1] == '}'));
        tarn_buf_free(&ob);
        tarn_buf_free(&b);
        if (!ok && w->bad++ == 0) {
            snprintf(w->first_bad, sizeof w->first_bad,
                     "round %d: write %s, read %s, version %" PRIu64 " after %" PRIu64, n,
                     tarn_status_name((int32_t)st), tarn_status_name((int32_t)rs), v, prev);
        }
        prev = v;
    }
    w->last = prev;
    return NULL;
}

static void test_threads(void)
{
    tarn_engine *e = manual_engine(0);
    if (e == NULL) {
        return;
    }

    /* 8 threads race to create one key: exactly one wins. */
    pthread_barrier_t start;
    if (!CHECK(pthread_barrier_init(&start, NULL, RACERS) == 0)) {
        tarn_engine_free(e);
        return;
    }
    struct racer racers[RACERS];
    pthread_t threads[RACERS];
    int started = 0;
    for (int i = 0; i < RACERS; i++) {
        racers[i] = (struct racer){e, &start, i, TARN_PANIC, 0, false};
        if (CHECK(pthread_create(&threads[i], NULL, race, &racers[i]) == 0)) {
            started++;
        }
    }
    if (started != RACERS) { /* the barrier would never open */
        fprintf(stdout, "cannot start the racing threads\n");
        exit(2);
    }
    for (int i = 0; i < RACERS; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0);
    }
    pthread_barrier_destroy(&start);
    int wins = 0, exists = 0, winner = -1;
    for (int i = 0; i < RACERS; i++) {
        if (racers[i].status == TARN_OK) {
            wins++;
            winner = i;
        } else if (racers[i].status == TARN_EXISTS) {
            exists++;
            CHECK(racers[i].version == SENTINEL);
        }
        CHECK(racers[i].message_ok);
    }
    CHECK(wins == 1);
    CHECK(exists == RACERS - 1);
    if (winner >= 0) {
        char json[32];
        snprintf(json, sizeof json, "{\"winner\":%d}", winner);
        EXPECT_DOC(e, "race", "prize", json, racers[winner].version);
        CHECK(last_version(e) == racers[winner].version); /* the losers took no version */
    }

    /* 4 threads, each 1000 writes + reads of its own key, alongside each other. */
    uint64_t before = last_version(e);
    if (!CHECK(pthread_barrier_init(&start, NULL, WORKERS) == 0)) {
        tarn_engine_free(e);
        return;
    }
    struct worker workers[WORKERS];
    pthread_t wthreads[WORKERS];
    started = 0;
    for (int i = 0; i < WORKERS; i++) {
        workers[i] = (struct worker){e, &start, i, 0, 0, ""};
        if (CHECK(pthread_create(&wthreads[i], NULL, work, &workers[i]) == 0)) {
            started++;
        }
    }
    if (started != WORKERS) {
        fprintf(stdout, "cannot start the worker threads\n");
        exit(2);
    }
    for (int i = 0; i < WORKERS; i++) {
        CHECK(pthread_join(wthreads[i], NULL) == 0);
    }
    pthread_barrier_destroy(&start);
    for (int i = 0; i < WORKERS; i++) {
        if (!CHECK(workers[i].bad == 0)) {
            fprintf(stdout, "    thread %d: %d bad rounds; first: %s\n", i, workers[i].bad,
                    workers[i].first_bad);
        }
        char key[16], json[64];
        snprintf(key, sizeof key, "t%d", i);
        snprintf(json, sizeof json, "{\"thread\":%d,\"n\":%d}", i, ROUNDS - 1);
        EXPECT_DOC(e, "work", key, json, workers[i].last);
    }
    /* Every write took exactly one version of the shared sequence. */
    CHECK(last_version(e) - before == (uint64_t)WORKERS * ROUNDS);
    tarn_buf b;
    EXPECT_JSON(tarn_store_list(e, "work", TARN_LIST_KEYS_ONLY, &b), &b,
                "[\"t0\",\"t1\",\"t2\",\"t3\"]");
    tarn_engine_free(e);
}

int main(void)
{
    /* Everything goes to stdout, line by line, so the summary is the last line. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_versions_and_names(); /* first: it checks the initial empty last error */
    test_free_functions_accept_null();
    test_builder();
    test_system_clock_engine();
    test_manual_clock();
    test_last_error_is_per_call_and_sticky();
    test_write_read();
    test_null_arguments();
    test_invalid_names();
    test_invalid_json();
    test_conditional_write_and_remove();
    test_patch();
    test_listing();
    test_ttl();
    test_limits();
    test_capacity();
    test_change_meta();
    test_closed();
    test_threads();

    return check_summary();
}
