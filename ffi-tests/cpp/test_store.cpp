// test_store.cpp: the C++ wrapper (include/tarn.hpp) over the store, clock and engine,
// for C ABI version 2 (the option structs carry change metadata; the bus and sessions
// have their own program, test_bus.cpp).
//
// Built and run by tests/ffi.rs (cpp_programs) with -std=c++17 -Wall -Wextra -Werror
// -pedantic under AddressSanitizer (leak detection on) and UBSan, so every Buffer,
// Engine and EngineBuilder the wrapper owns must be released. No test framework: each
// CHECK counts a pass or prints file:line of a failure; the exit code is non-zero if
// any check failed. Nothing waits on wall time: TTLs use the manual clock, races a spin latch.

#include "tarn.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
using namespace std::string_view_literals;

#include "check.hpp"


static constexpr std::uint64_t T0 = 1'700'000'000'000ULL;

static tarn::Engine manual_engine(std::uint64_t start = T0) {
    return tarn::EngineBuilder().workers(2).manual_clock(start).build();
}

// ---------------------------------------------------------------------------------------
// Library identity and status names
// ---------------------------------------------------------------------------------------

static void test_identity() {
    static_assert(TARN_ABI_VERSION == 2, "this program tests C ABI version 2");
    CHECK_EQ(tarn::header_abi_version, 2u);
    CHECK_EQ(tarn::version(), "0.1.0"sv);
    CHECK_EQ(tarn::abi_version(), static_cast<std::uint32_t>(TARN_ABI_VERSION));
    CHECK_EQ(tarn::header_abi_version, tarn::abi_version());
    CHECK(tarn::abi_compatible());
    CHECK_NOTHROW(tarn::check_abi_version());

    CHECK_EQ(tarn::status_name(TARN_OK), "TARN_OK"sv);
    CHECK_EQ(tarn::status_name(TARN_FULL), "TARN_FULL"sv);
    CHECK_EQ(tarn::status_name(TARN_PATCH_TEST_FAILED), "TARN_PATCH_TEST_FAILED"sv);
    CHECK_EQ(tarn::status_name(static_cast<tarn_status>(31)), "TARN_UNKNOWN_STATUS"sv);
    CHECK_EQ(tarn::status_name(TARN_TOO_OLD), "TARN_TOO_OLD"sv);
    CHECK_EQ(static_cast<int>(TARN_TOO_OLD), 17);
    CHECK_EQ(tarn::status_name(static_cast<tarn_status>(18)), "TARN_UNKNOWN_STATUS"sv);
    CHECK_EQ(tarn::status_name(static_cast<tarn_status>(-1)), "TARN_UNKNOWN_STATUS"sv);
    const tarn_status all[] = tarn_status_ALL;
    bool all_named = true;
    bool numbered_in_order = true;
    int expect = 0;
    for (tarn_status s : all) {
        const std::string_view n = tarn::status_name(s);
        all_named = all_named && n.substr(0, 5) == "TARN_" && n != "TARN_UNKNOWN_STATUS";
        numbered_in_order = numbered_in_order && static_cast<int>(s) == expect++;
    }
    CHECK(all_named);
    CHECK(numbered_in_order);
    CHECK_EQ(sizeof(all) / sizeof(all[0]), 18u);
    const tarn::Error too_old(TARN_TOO_OLD, "version 1 is too old");
    CHECK_EQ(std::string(too_old.what()), "TARN_TOO_OLD: version 1 is too old"sv);

    // Error composes "<name>: <message>" and keeps both parts.
    const tarn::Error e(TARN_EXISTS, "made up");
    CHECK_EQ(e.status(), TARN_EXISTS);
    CHECK_EQ(e.status_name(), "TARN_EXISTS"sv);
    CHECK_EQ(e.detail(), "made up"sv);
    CHECK_EQ(std::string(e.what()), "TARN_EXISTS: made up"sv);
    CHECK_NOTHROW(tarn::check(TARN_OK));
    CHECK_STATUS(TARN_TIMEOUT, tarn::check(TARN_TIMEOUT));
}

// ---------------------------------------------------------------------------------------
// Every store operation, and versions
// ---------------------------------------------------------------------------------------

static void test_operations() {
    tarn::Engine engine = manual_engine();
    tarn::Store store = engine.store();
    tarn::Clock clock = engine.clock();

    CHECK_EQ(store.buckets(), "[]"sv);
    CHECK_EQ(store.last_version(), 0u);
    CHECK_EQ(clock.now(), T0);

    const std::string alice1 = R"({"name":"alice","age":30})";
    const std::uint64_t v1 = store.write("users", "alice", alice1);
    CHECK(v1 > 0);
    CHECK_EQ(store.last_version(), v1);

    tarn::Document d = store.read("users", "alice");
    CHECK_EQ(d.json, alice1);
    CHECK_EQ(d.info.version, v1);
    CHECK_EQ(d.info.modified_ms, T0);
    CHECK(!d.info.expires_ms.has_value());

    // A shared read keeps the bytes it got, even after the document is overwritten.
    tarn::SharedDocument shared = store.read_shared("users", "alice");
    CHECK_EQ(shared.json.view(), std::string_view(alice1));
    CHECK_EQ(shared.info.version, v1);

    CHECK_EQ(clock.advance(5ms), T0 + 5);
    const std::string alice2 = R"({"name":"alice","age":31})";
    const std::uint64_t v2 = store.write("users", "alice", alice2);
    CHECK(v2 > v1);
    CHECK_EQ(shared.json.view(), std::string_view(alice1));
    d = store.read("users", "alice");
    CHECK_EQ(d.json, alice2);
    CHECK_EQ(d.info.version, v2);
    CHECK_EQ(d.info.modified_ms, T0 + 5);

    const std::string bob = R"({"name":"bob"})";
    const std::uint64_t v3 = store.write("users", "bob", bob);
    CHECK(v3 > v2);
    CHECK_EQ(store.last_version(), v3);

    // try_read: a value when present.
    std::optional<tarn::Document> t = store.try_read("users", "bob");
    CHECK(t.has_value());
    CHECK(t && t->json == bob && t->info.version == v3);
    CHECK(!store.try_read("users", "carol").has_value());
    CHECK(!store.try_read("nobody-wrote-this", "x").has_value());

    // read_all: every field, sorted by key.
    const std::string all = "[{\"key\":\"alice\",\"version\":" + std::to_string(v2) +
                            ",\"modified_ms\":" + std::to_string(T0 + 5) +
                            ",\"expires_ms\":null,\"value\":" + alice2 +
                            "},{\"key\":\"bob\",\"version\":" + std::to_string(v3) +
                            ",\"modified_ms\":" + std::to_string(T0 + 5) +
                            ",\"expires_ms\":null,\"value\":" + bob + "}]";
    CHECK_EQ(store.read_all("users"), all);
    CHECK_EQ(store.read_all("nobody-wrote-this"), "[]"sv);

    // list: keys only (the default), or keys and values.
    CHECK_EQ(store.list("users"), R"(["alice","bob"])"sv);
    CHECK_EQ(store.list("users", true), R"(["alice","bob"])"sv);
    CHECK_EQ(store.list("users", false),
             "[{\"key\":\"alice\",\"value\":" + alice2 + "},{\"key\":\"bob\",\"value\":" + bob + "}]");
    CHECK_EQ(store.list("nobody-wrote-this"), "[]"sv);
    CHECK_EQ(store.list("nobody-wrote-this", false), "[]"sv);

    // Keys and buckets with non-ASCII UTF-8 and JSON escaping in listings.
    const std::uint64_t v4 = store.write("other", "k\"\xc3\xa9", "[1,2,3]");
    CHECK(v4 > v3);
    CHECK_EQ(store.buckets(), R"(["other","users"])"sv);
    CHECK_EQ(store.list("other"), "[\"k\\\"\xc3\xa9\"]"sv);
    CHECK_EQ(store.read("other", "k\"\xc3\xa9").json, "[1,2,3]"sv);

    // patch: returns the new version and document; the stored document changes.
    CHECK_NOTHROW(store.write("counters", "c", R"({"n":1})"));
    const std::uint64_t before = store.last_version();
    tarn::PatchResult p = store.patch("counters", "c", R"([{"op":"replace","path":"/n","value":2}])");
    CHECK(p.version > before);
    CHECK(p.json.has_value());
    CHECK_EQ(p.json.value_or(""), R"({"n":2})"sv);
    d = store.read("counters", "c");
    CHECK_EQ(d.json, R"({"n":2})"sv);
    CHECK_EQ(d.info.version, p.version);

    tarn::PatchOptions quiet;
    quiet.remove_data_from_reply = true;
    tarn::PatchResult q =
        store.patch("counters", "c", R"([{"op":"replace","path":"/n","value":3}])", quiet);
    CHECK(q.version > p.version);
    CHECK(!q.json.has_value());
    CHECK_EQ(store.read("counters", "c").json, R"({"n":3})"sv);

    tarn::PatchResult add = store.patch("counters", "c", R"([{"op":"add","path":"/o","value":[true]}])");
    CHECK_EQ(add.json.value_or(""), R"({"n":3,"o":[true]})"sv);
    tarn::PatchResult empty = store.patch("counters", "c", "[]");
    CHECK(empty.version > add.version);
    CHECK_EQ(empty.json.value_or(""), R"({"n":3,"o":[true]})"sv);

    // remove: gives a version; the document is gone everywhere.
    const std::uint64_t vr = store.remove("users", "bob");
    CHECK(vr > empty.version);
    CHECK_EQ(store.last_version(), vr);
    CHECK_STATUS(TARN_NOT_FOUND, store.read("users", "bob"));
    CHECK(!store.try_read("users", "bob").has_value());
    CHECK_EQ(store.list("users"), R"(["alice"])"sv);
    CHECK_STATUS(TARN_NOT_FOUND, store.remove("users", "bob"));

    // A bucket whose last document is removed is no longer listed.
    CHECK_NOTHROW(store.remove("other", "k\"\xc3\xa9"));
    CHECK_EQ(store.buckets(), R"(["counters","users"])"sv);
    CHECK_EQ(store.read_all("other"), "[]"sv);

    // Writing again after a removal starts a new, higher version.
    const std::uint64_t vb = store.write("users", "bob", bob);
    CHECK(vb > vr);
    CHECK_EQ(store.read("users", "bob").info.version, vb);

    // Documents are stored byte for byte as given (whitespace, number spelling).
    const std::string odd = " { \"a\" : 1.50 ,\n\t\"b\" : [ ] } ";
    CHECK_NOTHROW(store.write("users", "odd", odd));
    CHECK_EQ(store.read("users", "odd").json, odd);
    for (const char* scalar : {"null", "true", "0", "\"s\"", "-1e3"}) {
        CHECK_NOTHROW(store.write("scalars", scalar, scalar));
        CHECK_EQ(store.read("scalars", scalar).json, std::string_view(scalar));
    }

    CHECK_NOTHROW(engine.settle());
    CHECK_NOTHROW(engine.settle(2000ms));
}

// ---------------------------------------------------------------------------------------
// Error statuses
// ---------------------------------------------------------------------------------------

static void test_not_found_and_exists() {
    tarn::Engine engine = manual_engine();
    tarn::Store store = engine.store();

    const std::string w = CHECK_STATUS(TARN_NOT_FOUND, store.read("b", "missing"));
    CHECK(contains(w, "TARN_NOT_FOUND"));
    CHECK(contains(w, "missing"));
    CHECK_STATUS(TARN_NOT_FOUND, store.read("never", "k"));
    CHECK_STATUS(TARN_NOT_FOUND, store.patch("b", "missing", "[]"));
    CHECK_STATUS(TARN_NOT_FOUND, store.remove("b", "missing"));
    CHECK_STATUS(TARN_NOT_FOUND, store.read_shared("b", "missing"));

    // The Error carries the message tarn_last_error() had right after the failure, and is
    // a std::runtime_error.
    try {
        (void)store.read("b", "gone");
        CHECK(false);
    } catch (const std::runtime_error& re) {
        const tarn::Error* e = dynamic_cast<const tarn::Error*>(&re);
        CHECK(e != nullptr);
        if (e != nullptr) {
            CHECK_EQ(e->status(), TARN_NOT_FOUND);
            CHECK(!e->detail().empty());
            CHECK_EQ(tarn::last_error(), e->detail());
            CHECK_EQ(std::string(re.what()), "TARN_NOT_FOUND: " + e->detail());
        }
    }

    tarn::WriteOptions once;
    once.fail_if_exists = true;
    const std::uint64_t v = store.write("b", "k", R"({"first":true})", once);
    CHECK(v > 0);
    const std::string x = CHECK_STATUS(TARN_EXISTS, store.write("b", "k", R"({"second":true})", once));
    CHECK(contains(x, "TARN_EXISTS"));
    tarn::Document d = store.read("b", "k");
    CHECK_EQ(d.json, R"({"first":true})"sv);
    CHECK_EQ(d.info.version, v);
    CHECK_EQ(store.last_version(), v);
    // Without the flag the same write replaces it.
    CHECK(store.write("b", "k", R"({"second":true})") > v);
}

static void test_invalid_arguments() {
    tarn::Engine engine = manual_engine();
    tarn::Store store = engine.store();
    CHECK_NOTHROW(store.write("good", "k", "{}"));

    for (std::string_view bad : {""sv, " a"sv, "a "sv, "a."sv, ".a"sv, "*"sv, "$x"sv, "a\nb"sv}) {
        const std::string what = "bucket [" + std::string(bad) + "]";
        const std::string m = CHECK_STATUS(TARN_INVALID_ARGUMENT, store.write(bad, "k", "{}"));
        record(contains(m, "TARN_INVALID_ARGUMENT"), __FILE__, __LINE__, what);
        CHECK_STATUS(TARN_INVALID_ARGUMENT, store.read(bad, "k"));
        CHECK_STATUS(TARN_INVALID_ARGUMENT, store.try_read(bad, "k"));
        CHECK_STATUS(TARN_INVALID_ARGUMENT, store.read_all(bad));
        CHECK_STATUS(TARN_INVALID_ARGUMENT, store.list(bad));
        CHECK_STATUS(TARN_INVALID_ARGUMENT, store.patch(bad, "k", "[]"));
        CHECK_STATUS(TARN_INVALID_ARGUMENT, store.remove(bad, "k"));
    }
    for (std::string_view bad : {""sv, "*"sv, "a\x01"sv}) {
        CHECK_STATUS(TARN_INVALID_ARGUMENT, store.write("good", bad, "{}"));
        CHECK_STATUS(TARN_INVALID_ARGUMENT, store.read("good", bad));
        CHECK_STATUS(TARN_INVALID_ARGUMENT, store.try_read("good", bad));
        CHECK_STATUS(TARN_INVALID_ARGUMENT, store.patch("good", bad, "[]"));
        CHECK_STATUS(TARN_INVALID_ARGUMENT, store.remove("good", bad));
    }

    // An embedded NUL is refused by the wrapper (C would cut the name at it), so "k\0x"
    // neither reaches "k" nor is stored as "k".
    const std::string_view nul_key("k\0x", 3);
    const std::string_view nul_bucket("good\0evil", 9);
    const std::string m = CHECK_STATUS(TARN_INVALID_ARGUMENT, store.write("good", nul_key, "[1]"));
    CHECK(contains(m, "NUL"));
    CHECK_STATUS(TARN_INVALID_ARGUMENT, store.write(nul_bucket, "k", "[1]"));
    CHECK_STATUS(TARN_INVALID_ARGUMENT, store.read("good", nul_key));
    CHECK_STATUS(TARN_INVALID_ARGUMENT, store.try_read("good", nul_key));
    CHECK_STATUS(TARN_INVALID_ARGUMENT, store.read(nul_bucket, "k"));
    CHECK_STATUS(TARN_INVALID_ARGUMENT, store.read_all(nul_bucket));
    CHECK_STATUS(TARN_INVALID_ARGUMENT, store.list(nul_bucket));
    CHECK_STATUS(TARN_INVALID_ARGUMENT, store.patch("good", nul_key, "[]"));
    CHECK_STATUS(TARN_INVALID_ARGUMENT, store.remove("good", nul_key));
    CHECK_STATUS(TARN_INVALID_ARGUMENT, store.remove(nul_bucket, "k"));
    CHECK_EQ(store.read("good", "k").json, "{}"sv);
    CHECK_EQ(store.list("good"), R"(["k"])"sv);

    // Invalid UTF-8 in a name has its own status.
    CHECK_STATUS(TARN_INVALID_UTF8, store.write("good", "\xff", "{}"));
    CHECK_STATUS(TARN_INVALID_UTF8, store.read("\xc3", "k"));

    // Durations the C ABI cannot express, and a TTL of zero (C would read "never").
    tarn::WriteOptions zero;
    zero.ttl = 0ms;
    CHECK_STATUS(TARN_INVALID_ARGUMENT, store.write("good", "ttl", "{}", zero));
    tarn::WriteOptions negative;
    negative.ttl = -5ms;
    CHECK_STATUS(TARN_INVALID_ARGUMENT, store.write("good", "ttl", "{}", negative));
    CHECK(!store.try_read("good", "ttl").has_value());
    CHECK_STATUS(TARN_INVALID_ARGUMENT, engine.clock().advance(-1ms));
    CHECK_STATUS(TARN_INVALID_ARGUMENT, engine.settle(-1ms));

    // Builder settings out of range are refused by build().
    CHECK_STATUS(TARN_INVALID_ARGUMENT, tarn::EngineBuilder().workers(0).build());
    CHECK_STATUS(TARN_INVALID_ARGUMENT, tarn::EngineBuilder().workers(257).build());
    CHECK_STATUS(TARN_INVALID_ARGUMENT, tarn::EngineBuilder().queue_capacity(0).build());
    CHECK_STATUS(TARN_INVALID_ARGUMENT, tarn::EngineBuilder().max_key_bytes(0).build());
    CHECK_STATUS(TARN_INVALID_ARGUMENT, tarn::EngineBuilder().max_bucket_bytes(0).build());
    CHECK_STATUS(TARN_INVALID_ARGUMENT, tarn::EngineBuilder().max_document_bytes(0).build());
    // A change log of any size, 0 included, is fine (0 keeps none).
    CHECK_NOTHROW(tarn::EngineBuilder().change_log_capacity(0).build());
    CHECK_NOTHROW(tarn::EngineBuilder().change_log_capacity(1).manual_clock(T0).build());
}

static void test_json_and_patch_errors() {
    tarn::Engine engine = manual_engine();
    tarn::Store store = engine.store();

    for (std::string_view bad :
         {""sv, "{"sv, "{} x"sv, "[1,]"sv, "\xff"sv, "{'a':1}"sv, "nul"sv, "\"\\ud800\""sv}) {
        CHECK_STATUS(TARN_INVALID_JSON, store.write("j", "k", bad));
    }
    CHECK_EQ(store.list("j"), "[]"sv);
    CHECK_EQ(store.last_version(), 0u);

    // A document with its own spelling; every failed patch must leave it byte-identical.
    const std::string original = "{ \"a\" : 1,  \"list\":[1, 2 ,3], \"s\":\"x\" }";
    const std::uint64_t v = store.write("j", "doc", original);
    auto untouched = [&](int line) {
        tarn::Document d = store.read("j", "doc");
        record(d.json == original, __FILE__, line, "document changed: " + d.json);
        record(d.info.version == v, __FILE__, line, "version changed");
        record(store.last_version() == v, __FILE__, line, "last_version changed");
    };

    for (std::string_view bad :
         {""sv, "["sv, "{}"sv, "42"sv, R"([{"op":"nope","path":"/a"}])"sv,
          R"([{"op":"add","path":"/a"}])"sv, R"([{"path":"/a","value":1}])"sv,
          R"([{"op":"replace","value":1}])"sv}) {
        CHECK_STATUS(TARN_INVALID_PATCH, store.patch("j", "doc", bad));
        untouched(__LINE__);
    }

    for (std::string_view bad :
         {R"([{"op":"remove","path":"/missing"}])"sv,
          R"([{"op":"replace","path":"/missing","value":1}])"sv,
          R"([{"op":"move","from":"/missing","path":"/b"}])"sv,
          R"([{"op":"copy","from":"/list/9","path":"/b"}])"sv,
          R"([{"op":"add","path":"/missing/deeper","value":1}])"sv,
          // The first operation succeeds on the working copy; the second fails.
          R"([{"op":"add","path":"/new","value":1},{"op":"remove","path":"/nope"}])"sv}) {
        CHECK_STATUS(TARN_PATCH_PATH_NOT_FOUND, store.patch("j", "doc", bad));
        untouched(__LINE__);
    }

    for (std::string_view bad :
         {R"([{"op":"test","path":"/a","value":2}])"sv,
          R"([{"op":"test","path":"/s","value":"y"}])"sv,
          R"([{"op":"replace","path":"/a","value":5},{"op":"test","path":"/a","value":1}])"sv}) {
        const std::string m = CHECK_STATUS(TARN_PATCH_TEST_FAILED, store.patch("j", "doc", bad));
        CHECK(contains(m, "TARN_PATCH_TEST_FAILED"));
        untouched(__LINE__);
    }

    // A conditional patch on a stale version changes nothing either.
    tarn::PatchOptions stale;
    stale.if_version = v + 1;
    CHECK_STATUS(TARN_VERSION_CONFLICT,
                 store.patch("j", "doc", R"([{"op":"replace","path":"/a","value":9}])", stale));
    untouched(__LINE__);

    // A passing test operation lets the patch through.
    tarn::PatchResult r = store.patch(
        "j", "doc", R"([{"op":"test","path":"/a","value":1},{"op":"remove","path":"/list"}])");
    CHECK(r.version > v);
    CHECK_EQ(r.json.value_or(""), R"({"a":1,"s":"x"})"sv);
}

static void test_version_conflicts() {
    tarn::Engine engine = manual_engine();
    tarn::Store store = engine.store();

    // if_version 0: only if absent.
    tarn::WriteOptions absent;
    absent.if_version = 0;
    const std::uint64_t v1 = store.write("v", "k", "1", absent);
    CHECK(v1 > 0);
    CHECK_STATUS(TARN_VERSION_CONFLICT, store.write("v", "k", "2", absent));
    CHECK_EQ(store.read("v", "k").json, "1"sv);

    tarn::WriteOptions wrong;
    wrong.if_version = v1 + 100;
    const std::string m = CHECK_STATUS(TARN_VERSION_CONFLICT, store.write("v", "k", "2", wrong));
    CHECK(contains(m, "TARN_VERSION_CONFLICT"));
    tarn::WriteOptions right;
    right.if_version = v1;
    const std::uint64_t v2 = store.write("v", "k", "2", right);
    CHECK(v2 > v1);
    // The version it was conditional on is now stale.
    CHECK_STATUS(TARN_VERSION_CONFLICT, store.write("v", "k", "3", right));
    CHECK_EQ(store.read("v", "k").json, "2"sv);

    tarn::PatchOptions pwrong;
    pwrong.if_version = v1;
    CHECK_STATUS(TARN_VERSION_CONFLICT, store.patch("v", "k", "[]", pwrong));
    tarn::PatchOptions pright;
    pright.if_version = v2;
    const tarn::PatchResult p = store.patch("v", "k", R"([{"op":"replace","path":"","value":7}])", pright);
    CHECK(p.version > v2);
    CHECK_EQ(p.json.value_or(""), "7"sv);

    tarn::RemoveOptions rwrong;
    rwrong.if_version = v2;
    CHECK_STATUS(TARN_VERSION_CONFLICT, store.remove("v", "k", rwrong));
    CHECK_EQ(store.read("v", "k").json, "7"sv);
    tarn::RemoveOptions rright;
    rright.if_version = p.version;
    const std::uint64_t vr = store.remove("v", "k", rright);
    CHECK(vr > p.version);
    CHECK_STATUS(TARN_NOT_FOUND, store.remove("v", "k", rright));

    // Absent again: if_version 0 succeeds, a stale non-zero version conflicts.
    CHECK_STATUS(TARN_VERSION_CONFLICT, store.write("v", "k", "8", right));
    CHECK(store.write("v", "k", "8", absent) > vr);

    // fail_if_exists and if_version together: both must hold.
    tarn::WriteOptions both;
    both.fail_if_exists = true;
    both.if_version = 0;
    CHECK(store.write("v", "fresh", "1", both) > 0);
    CHECK_STATUS(TARN_EXISTS, store.write("v", "fresh", "2", both));
}

static void test_limits() {
    tarn::Engine engine = tarn::EngineBuilder()
                              .workers(1)
                              .queue_capacity(16)
                              .manual_clock(T0)
                              .max_bucket_bytes(8)
                              .max_key_bytes(8)
                              .max_document_bytes(32)
                              .build();
    tarn::Store store = engine.store();
    auto doc = [](std::size_t n) { return "{\"s\":\"" + std::string(n, 'x') + "\"}"; };
    CHECK_EQ(doc(24).size(), 32u);

    CHECK_NOTHROW(store.write("bucket12", "key12345", doc(24)));
    CHECK_STATUS(TARN_TOO_LARGE, store.write("bucket123", "k", "1"));
    CHECK_STATUS(TARN_TOO_LARGE, store.write("b", "key123456", "1"));
    const std::string m = CHECK_STATUS(TARN_TOO_LARGE, store.write("b", "k", doc(25)));
    CHECK(contains(m, "TARN_TOO_LARGE"));
    CHECK_STATUS(TARN_TOO_LARGE, store.read("b", "key123456"));
    CHECK_STATUS(TARN_TOO_LARGE, store.read_all("bucket123"));
    CHECK_EQ(store.list("b"), "[]"sv);

    // A patch whose result is over the bound is refused; the document is unchanged.
    CHECK_NOTHROW(store.write("b", "k", doc(1)));
    const std::uint64_t v = store.last_version();
    CHECK_STATUS(TARN_TOO_LARGE,
                 store.patch("b", "k", R"([{"op":"add","path":"/t","value":"0123456789012345678901234"}])"));
    CHECK_EQ(store.read("b", "k").json, doc(1));
    CHECK_EQ(store.read("b", "k").info.version, v);

    // Store capacity: keys + documents.
    tarn::Engine small = tarn::EngineBuilder().manual_clock(T0).store_capacity_bytes(64).build();
    tarn::Store s = small.store();
    const std::string forty(38, ' ');
    const std::string doc40 = "\"" + forty + "\"";  // 40 bytes
    CHECK_EQ(doc40.size(), 40u);
    CHECK_NOTHROW(s.write("b", "k1", doc40));  // 2 + 40 = 42
    const std::uint64_t v1 = s.last_version();
    const std::string f = CHECK_STATUS(TARN_FULL, s.write("b", "k2", doc40));  // 42 + 42 > 64
    CHECK(contains(f, "TARN_FULL"));
    CHECK_EQ(s.list("b"), R"(["k1"])"sv);
    CHECK_EQ(s.last_version(), v1);
    // Replacing a document only needs room for the difference.
    const std::string doc62 = "\"" + std::string(60, 'y') + "\"";
    CHECK_NOTHROW(s.write("b", "k1", doc62));  // 2 + 62 = 64: exactly full
    CHECK_STATUS(TARN_FULL, s.write("b", "z", "1"));
    CHECK_STATUS(TARN_FULL, s.patch("b", "k1", R"([{"op":"replace","path":"","value":"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"}])"));
    CHECK_EQ(s.read("b", "k1").json, doc62);
    // Removing frees the room.
    CHECK_NOTHROW(s.remove("b", "k1"));
    CHECK_NOTHROW(s.write("b", "k2", doc40));
    CHECK_NOTHROW(s.write("b", "k3", "1"));
}

static void test_clock_and_closed() {
    // The system clock cannot be set or advanced.
    {
        tarn::Engine sys = tarn::Engine::create();
        tarn::Clock c = sys.clock();
        const std::uint64_t now = c.now();
        CHECK(now > 1'600'000'000'000ULL);
        CHECK(c.now() >= now);
        const std::string m = CHECK_STATUS(TARN_NOT_SUPPORTED, c.set(now + 1000));
        CHECK(contains(m, "TARN_NOT_SUPPORTED"));
        CHECK_STATUS(TARN_NOT_SUPPORTED, c.advance(10ms));
        // It still stores (and stamps with its own clock).
        CHECK_NOTHROW(sys.store().write("b", "k", "{}"));
        CHECK(sys.store().read("b", "k").info.modified_ms >= now);
    }

    // A manual clock moves only when told, and never backwards.
    {
        tarn::Engine engine = manual_engine(1000);
        tarn::Clock c = engine.clock();
        CHECK_EQ(c.now(), 1000u);
        CHECK_EQ(c.now(), 1000u);
        CHECK_EQ(c.advance(0ms), 1000u);
        CHECK_EQ(c.advance(250ms), 1250u);
        CHECK_NOTHROW(c.set(5000));
        CHECK_EQ(c.now(), 5000u);
        CHECK_NOTHROW(c.set(5000));
        CHECK_STATUS(TARN_INVALID_ARGUMENT, c.set(4999));
        CHECK_EQ(c.now(), 5000u);
        CHECK_EQ(c.advance(std::chrono::seconds(2)), 7000u);
    }

    // After close(), every operation reports TARN_CLOSED; closing twice is harmless.
    {
        tarn::Engine engine = manual_engine();
        tarn::Store store = engine.store();
        CHECK_NOTHROW(store.write("b", "k", R"({"a":1})"));
        CHECK_NOTHROW(engine.close());
        CHECK_NOTHROW(engine.close());
        const std::string m = CHECK_STATUS(TARN_CLOSED, store.read("b", "k"));
        CHECK(contains(m, "TARN_CLOSED"));
        CHECK_STATUS(TARN_CLOSED, store.read_shared("b", "k"));
        CHECK_STATUS(TARN_CLOSED, store.try_read("b", "k"));
        CHECK_STATUS(TARN_CLOSED, store.read_all("b"));
        CHECK_STATUS(TARN_CLOSED, store.list("b"));
        CHECK_STATUS(TARN_CLOSED, store.list("b", false));
        CHECK_STATUS(TARN_CLOSED, store.buckets());
        CHECK_STATUS(TARN_CLOSED, store.write("b", "k2", "{}"));
        CHECK_STATUS(TARN_CLOSED, store.patch("b", "k", "[]"));
        CHECK_STATUS(TARN_CLOSED, store.remove("b", "k"));
        CHECK_STATUS(TARN_CLOSED, engine.settle());
        CHECK_STATUS(TARN_CLOSED, engine.clock().set(T0 + 10));
        CHECK_STATUS(TARN_CLOSED, engine.clock().advance(10ms));
        CHECK_STATUS(TARN_CLOSED, engine.open_session("late"));
        CHECK_STATUS(TARN_CLOSED, engine.bus().subscribe("b", "*"));
        CHECK_STATUS(TARN_CLOSED, engine.bus().signal("b", "k"));
        // The destructor frees the closed engine (checked by the leak detector).
    }
}

// ---------------------------------------------------------------------------------------
// Option structs (ABI 2: change metadata) and their checks
// ---------------------------------------------------------------------------------------

// Whether T::to_c() can be called on an expression of type T (an lvalue reference type
// or a prvalue): the conversion borrows strings, so it is deleted for temporaries.
template <typename T, typename = void>
struct can_convert : std::false_type {};
template <typename T>
struct can_convert<T, std::void_t<decltype(std::declval<T>().to_c())>> : std::true_type {};

static_assert(can_convert<const tarn::WriteOptions&>::value, "to_c on an lvalue");
static_assert(!can_convert<tarn::WriteOptions>::value, "no to_c on a temporary");
static_assert(!can_convert<tarn::PatchOptions>::value, "no to_c on a temporary");
static_assert(!can_convert<tarn::RemoveOptions>::value, "no to_c on a temporary");
static_assert(can_convert<tarn::ListenOptions>::value, "ListenOptions borrows nothing");

static void test_option_structs() {
    // Defaults are all zero, as the C defaults (a NULL options pointer) are.
    const tarn::WriteOptions w0;
    const tarn_write_options cw0 = w0.to_c();
    CHECK(cw0.flags == 0 && cw0.ttl_ms == 0 && cw0.if_version == 0);
    CHECK(cw0.meta.session == 0 && cw0.meta.request_id == nullptr && cw0.meta.user_data == nullptr &&
          cw0.meta.user_data_len == 0);
    const tarn::PatchOptions p0;
    const tarn_patch_options cp0 = p0.to_c();
    CHECK(cp0.flags == 0 && cp0.if_version == 0 && cp0.meta.session == 0 &&
          cp0.meta.request_id == nullptr && cp0.meta.user_data == nullptr);
    const tarn::RemoveOptions r0;
    const tarn_remove_options cr0 = r0.to_c();
    CHECK(cr0.flags == 0 && cr0.if_version == 0 && cr0.meta.session == 0 &&
          cr0.meta.request_id == nullptr && cr0.meta.user_data == nullptr);

    // Every field, and metadata borrowed from the options object (not copied).
    tarn::WriteOptions w;
    w.fail_if_exists = true;
    w.ttl = 250ms;
    w.if_version = 9;
    w.expire_session = true;
    w.session = 7;
    w.request_id = "req";
    w.user_data = R"({"a":1})";
    const tarn_write_options cw = w.to_c();
    CHECK_EQ(cw.flags, static_cast<std::uint32_t>(TARN_WRITE_FAIL_IF_EXISTS | TARN_WRITE_IF_VERSION |
                                                  TARN_WRITE_EXPIRE_SESSION));
    CHECK_EQ(cw.ttl_ms, 250u);
    CHECK_EQ(cw.if_version, 9u);
    CHECK_EQ(cw.meta.session, 7u);
    CHECK(cw.meta.request_id == w.request_id->c_str());
    CHECK(cw.meta.user_data == reinterpret_cast<const std::uint8_t*>(w.user_data->data()));
    CHECK_EQ(cw.meta.user_data_len, 7u);

    tarn::PatchOptions p;
    p.remove_data_from_reply = true;
    p.if_version = 3;
    p.session = 2;
    p.user_data = "";  // an empty text stays a (zero-length) text, not "none"
    const tarn_patch_options cp = p.to_c();
    CHECK_EQ(cp.flags, static_cast<std::uint32_t>(TARN_PATCH_REMOVE_DATA_FROM_REPLY | TARN_PATCH_IF_VERSION));
    CHECK_EQ(cp.if_version, 3u);
    CHECK_EQ(cp.meta.session, 2u);
    CHECK(cp.meta.request_id == nullptr);
    CHECK(cp.meta.user_data != nullptr);
    CHECK_EQ(cp.meta.user_data_len, 0u);

    tarn::RemoveOptions r;
    r.if_version = 0;
    r.request_id = "";
    const tarn_remove_options cr = r.to_c();
    CHECK_EQ(cr.flags, static_cast<std::uint32_t>(TARN_REMOVE_IF_VERSION));
    CHECK_EQ(cr.if_version, 0u);
    CHECK(cr.meta.request_id != nullptr && cr.meta.request_id[0] == '\0');

    tarn::ListenOptions l;
    l.send_values = l.ignore_own = l.block = true;
    l.capacity = 5;
    l.block_timeout = 1500ms;
    l.from_version = 0;
    l.session = 4;  // a separate argument of the C calls
    const tarn_listen_options cl = l.to_c();
    CHECK_EQ(cl.flags, static_cast<std::uint32_t>(TARN_LISTEN_SEND_VALUES | TARN_LISTEN_IGNORE_OWN |
                                                  TARN_LISTEN_BLOCK | TARN_LISTEN_FROM_VERSION));
    CHECK_EQ(cl.capacity, 5u);
    CHECK_EQ(cl.block_timeout_ms, 1500u);
    CHECK_EQ(cl.from_version, 0u);
    const tarn_listen_options cl0 = tarn::ListenOptions().to_c();
    CHECK(cl0.flags == 0 && cl0.capacity == 0 && cl0.block_timeout_ms == 0 && cl0.from_version == 0);

    // What the wrapper refuses before any C call: a NUL in a request id, negative
    // durations.
    tarn::WriteOptions nul;
    nul.request_id = std::string("a\0b", 3);
    CHECK_STATUS(TARN_INVALID_ARGUMENT, (void)nul.to_c());
    tarn::ListenOptions negative;
    negative.block_timeout = -1ms;
    CHECK_STATUS(TARN_INVALID_ARGUMENT, (void)negative.to_c());
}

static void test_change_meta() {
    tarn::Engine engine = tarn::EngineBuilder().workers(2).manual_clock(T0).max_key_bytes(8).build();
    tarn::Store store = engine.store();

    // Metadata is passed to listeners, never stored: documents and versions are as
    // without it.
    tarn::WriteOptions meta;
    meta.request_id = "r-1";
    meta.user_data = R"({"who":"me"})";
    const std::uint64_t v1 = store.write("m", "k", R"({"n":1})", meta);
    const tarn::Document d = store.read("m", "k");
    CHECK_EQ(d.json, R"({"n":1})"sv);
    CHECK_EQ(d.info.version, v1);
    tarn::PatchOptions pmeta;
    pmeta.request_id = "r-2";
    pmeta.user_data = "[1]";
    const tarn::PatchResult p = store.patch("m", "k", R"([{"op":"add","path":"/m","value":true}])", pmeta);
    CHECK_EQ(p.json.value_or(""), R"({"n":1,"m":true})"sv);
    CHECK(p.version > v1);
    tarn::RemoveOptions rmeta;
    rmeta.request_id = "r-3";
    rmeta.user_data = "null";
    CHECK(store.remove("m", "k", rmeta) > p.version);

    // Refused metadata changes nothing.
    const std::uint64_t v2 = store.write("m", "k", R"({"n":2})");
    auto untouched = [&](int line) {
        const tarn::Document now = store.read("m", "k");
        record(now.json == R"({"n":2})" && now.info.version == v2 && store.last_version() == v2,
               __FILE__, line, "document changed: " + now.json);
    };
    for (const char* bad : {"", "{", "[1,]", "nope", "{} {}"}) {
        tarn::WriteOptions w;
        w.user_data = bad;
        CHECK_STATUS(TARN_INVALID_JSON, store.write("m", "k", "1", w));
        tarn::PatchOptions po;
        po.user_data = bad;
        CHECK_STATUS(TARN_INVALID_JSON, store.patch("m", "k", "[]", po));
        tarn::RemoveOptions ro;
        ro.user_data = bad;
        CHECK_STATUS(TARN_INVALID_JSON, store.remove("m", "k", ro));
        untouched(__LINE__);
    }
    tarn::WriteOptions nul;
    nul.request_id = std::string("r\0", 2);
    const std::string m = CHECK_STATUS(TARN_INVALID_ARGUMENT, store.write("m", "k", "1", nul));
    CHECK(contains(m, "NUL"));
    tarn::PatchOptions pnul;
    pnul.request_id = std::string("\0", 1);
    CHECK_STATUS(TARN_INVALID_ARGUMENT, store.patch("m", "k", "[]", pnul));
    tarn::RemoveOptions rnul;
    rnul.request_id = std::string("x\0y", 3);
    CHECK_STATUS(TARN_INVALID_ARGUMENT, store.remove("m", "k", rnul));
    untouched(__LINE__);
    // A request id is bounded like a key (8 bytes here).
    tarn::WriteOptions long_id;
    long_id.request_id = "123456789";
    CHECK_STATUS(TARN_TOO_LARGE, store.write("m", "k", "1", long_id));
    untouched(__LINE__);
    long_id.request_id = "12345678";
    CHECK_NOTHROW(store.write("m", "k2", "1", long_id));

    // Sessions: expire_session needs one, and only an open one is accepted.
    tarn::WriteOptions orphan;
    orphan.expire_session = true;
    const std::string o = CHECK_STATUS(TARN_INVALID_ARGUMENT, store.write("m", "s", "1", orphan));
    CHECK(contains(o, "session"));
    orphan.session = 4242;
    CHECK_STATUS(TARN_NOT_FOUND, store.write("m", "s", "1", orphan));
    tarn::WriteOptions stranger;
    stranger.session = 4242;
    CHECK_STATUS(TARN_NOT_FOUND, store.write("m", "s", "1", stranger));
    CHECK(!store.try_read("m", "s").has_value());

    // A session-owned document lives until its session closes; a plain write by the
    // same session, or a later write without expire_session, is permanent.
    const std::uint64_t before = store.last_version();
    {
        tarn::Session s = engine.open_session("owner");
        tarn::WriteOptions owned;
        owned.expire_session = true;
        owned.session = s.id();
        CHECK(store.write("m", "owned", "1", owned) > before);
        CHECK(store.write("m", "regained", "1", owned) > before);
        CHECK_NOTHROW(store.write("m", "regained", "2"));
        tarn::WriteOptions by_s;
        by_s.session = s.id();
        CHECK_NOTHROW(store.write("m", "plain", "1", by_s));
        tarn::PatchOptions patch_by_s;
        patch_by_s.session = s.id();
        CHECK_NOTHROW(store.patch("m", "owned", "[]", patch_by_s));  // stays owned
        CHECK(store.try_read("m", "owned").has_value());
        CHECK_NOTHROW(engine.clock().advance(std::chrono::hours(1)));
        CHECK_NOTHROW(engine.settle());
        CHECK(store.try_read("m", "owned").has_value());  // no lease: only closing ends it
    }  // ~Session closes it
    CHECK(!store.try_read("m", "owned").has_value());
    CHECK_EQ(store.read("m", "regained").json, "2"sv);
    CHECK_EQ(store.read("m", "plain").json, "1"sv);
    CHECK_EQ(store.list("m"), R"(["k","k2","plain","regained"])"sv);
}

// ---------------------------------------------------------------------------------------
// TTL with the manual clock
// ---------------------------------------------------------------------------------------

static void test_ttl() {
    tarn::Engine engine = manual_engine();
    tarn::Store store = engine.store();
    tarn::Clock clock = engine.clock();

    tarn::WriteOptions ttl100;
    ttl100.ttl = 100ms;
    const std::uint64_t v = store.write("cache", "k", R"({"v":1})", ttl100);
    CHECK_NOTHROW(store.write("cache", "perm", R"({"v":0})"));
    tarn::Document d = store.read("cache", "k");
    CHECK_EQ(d.info.version, v);
    CHECK_EQ(d.info.modified_ms, T0);
    CHECK(d.info.expires_ms.has_value());
    CHECK_EQ(d.info.expires_ms.value_or(0), T0 + 100);
    CHECK(contains(store.read_all("cache"), "\"expires_ms\":" + std::to_string(T0 + 100)));

    CHECK_EQ(clock.advance(99ms), T0 + 99);
    CHECK(store.try_read("cache", "k").has_value());
    CHECK_EQ(store.list("cache"), R"(["k","perm"])"sv);

    // A patch keeps the TTL.
    const tarn::PatchResult p = store.patch("cache", "k", R"([{"op":"replace","path":"/v","value":2}])");
    d = store.read("cache", "k");
    CHECK_EQ(d.info.version, p.version);
    CHECK_EQ(d.info.modified_ms, T0 + 99);
    CHECK_EQ(d.info.expires_ms.value_or(0), T0 + 100);

    // At the deadline it is gone for every read, before any sweep.
    CHECK_EQ(clock.advance(1ms), T0 + 100);
    CHECK_STATUS(TARN_NOT_FOUND, store.read("cache", "k"));
    CHECK(!store.try_read("cache", "k").has_value());
    CHECK_STATUS(TARN_NOT_FOUND, store.patch("cache", "k", "[]"));
    CHECK_STATUS(TARN_NOT_FOUND, store.remove("cache", "k"));
    CHECK_EQ(store.list("cache"), R"(["perm"])"sv);

    CHECK_NOTHROW(engine.settle());
    CHECK_EQ(store.list("cache"), R"(["perm"])"sv);
    CHECK(!contains(store.read_all("cache"), "\"k\""));
    CHECK_STATUS(TARN_NOT_FOUND, store.read("cache", "k"));

    // An expired key counts as absent for fail_if_exists and if_version 0, even before
    // the sweeper runs.
    tarn::WriteOptions ttl10;
    ttl10.ttl = 10ms;
    CHECK_NOTHROW(store.write("cache", "e", "1", ttl10));
    CHECK_NOTHROW(clock.advance(10ms));
    tarn::WriteOptions once;
    once.fail_if_exists = true;
    CHECK_NOTHROW(store.write("cache", "e", "2", once));
    CHECK_EQ(store.read("cache", "e").json, "2"sv);
    CHECK(!store.read("cache", "e").info.expires_ms.has_value());
    CHECK_NOTHROW(store.write("cache", "e2", "1", ttl10));
    CHECK_NOTHROW(clock.advance(10ms));
    tarn::WriteOptions absent;
    absent.if_version = 0;
    CHECK_NOTHROW(store.write("cache", "e2", "2", absent));

    // A plain write without a TTL makes a document permanent again.
    tarn::WriteOptions ttl50;
    ttl50.ttl = 50ms;
    CHECK_NOTHROW(store.write("cache", "p", "1", ttl50));
    CHECK_NOTHROW(store.write("cache", "p", "2"));
    CHECK_NOTHROW(clock.advance(1000ms));
    CHECK_NOTHROW(engine.settle());
    CHECK_EQ(store.read("cache", "p").json, "2"sv);

    // Setting the clock past a deadline expires too; a bucket with only expired
    // documents disappears from buckets().
    tarn::WriteOptions ttl500;
    ttl500.ttl = 500ms;
    CHECK_NOTHROW(store.write("short", "k", "1", ttl500));
    CHECK(contains(store.buckets(), "\"short\""));
    const std::uint64_t before = store.last_version();
    CHECK_NOTHROW(clock.set(clock.now() + 500));
    CHECK_NOTHROW(engine.settle(5000ms));
    CHECK(!contains(store.buckets(), "\"short\""));
    CHECK_EQ(store.read_all("short"), "[]"sv);
    CHECK(store.last_version() >= before);

    // Expired documents stop counting against the capacity once swept.
    tarn::Engine small = tarn::EngineBuilder().manual_clock(T0).store_capacity_bytes(50).build();
    tarn::Store s = small.store();
    const std::string doc40 = "\"" + std::string(38, 'a') + "\"";
    CHECK_NOTHROW(s.write("b", "k1", doc40, ttl100));
    CHECK_STATUS(TARN_FULL, s.write("b", "k2", doc40));
    CHECK_NOTHROW(small.clock().advance(100ms));
    CHECK_NOTHROW(small.settle());
    CHECK_NOTHROW(s.write("b", "k2", doc40));
    CHECK_EQ(s.list("b"), R"(["k2"])"sv);
}

// ---------------------------------------------------------------------------------------
// RAII and moves
// ---------------------------------------------------------------------------------------

static tarn::Buffer leak_probe(const tarn::Store& store) {
    tarn::SharedDocument d = store.read_shared("b", "k");
    return std::move(d.json);
}

static void throws_with_resources_alive() {
    tarn::Engine e = manual_engine();
    e.store().write("b", "k", "{}");
    tarn::SharedDocument d = e.store().read_shared("b", "k");
    e.store().read("b", "missing");  // throws; d and e must still be released
}

static void test_raii_and_moves() {
    // Buffer: move construction, move assignment (freeing the target's bytes), reset,
    // release and adoption.
    {
        tarn::Engine engine = manual_engine();
        tarn::Store store = engine.store();
        CHECK_NOTHROW(store.write("b", "k", R"({"k":1})"));
        CHECK_NOTHROW(store.write("b", "j", R"({"j":2})"));

        tarn::Buffer empty;
        CHECK(empty.empty());
        CHECK_EQ(empty.size(), 0u);
        CHECK_EQ(empty.view(), ""sv);
        CHECK_EQ(empty.str(), ""sv);

        tarn::Buffer a = leak_probe(store);
        CHECK_EQ(a.view(), R"({"k":1})"sv);
        CHECK_EQ(a.size(), 7u);
        tarn::Buffer b(std::move(a));
        CHECK(a.empty());
        CHECK(a.raw().data == nullptr && a.raw()._owner == nullptr);
        CHECK_EQ(b.view(), R"({"k":1})"sv);

        tarn::Buffer c = std::move(store.read_shared("b", "j").json);
        CHECK_EQ(c.str(), R"({"j":2})"sv);
        c = std::move(b);  // c's old bytes are freed
        CHECK(b.empty());
        CHECK_EQ(c.view(), R"({"k":1})"sv);
        tarn::Buffer& alias = c;
        c = std::move(alias);  // self-move keeps the bytes
        CHECK_EQ(c.view(), R"({"k":1})"sv);

        // Buffers outlive the document and the engine that produced them.
        CHECK_NOTHROW(store.remove("b", "k"));
        CHECK_EQ(c.view(), R"({"k":1})"sv);

        tarn::Buffer adopted(c.release());
        CHECK(c.empty());
        CHECK_EQ(adopted.view(), R"({"k":1})"sv);
        adopted.reset();
        CHECK(adopted.empty());
        adopted.reset();  // twice is harmless

        std::vector<tarn::Buffer> many;
        for (int i = 0; i < 50; ++i) {
            many.push_back(std::move(store.read_shared("b", "j").json));
        }
        bool all_same = true;
        for (const tarn::Buffer& x : many) {
            all_same = all_same && x.view() == R"({"j":2})";
        }
        CHECK(all_same);
        // `many` is destroyed after the engine below would be: declare order matters
        // only for views; Buffers own their bytes independently.
        tarn::Buffer survivor = std::move(many.back());
        many.clear();
        engine = tarn::Engine(nullptr);  // frees the engine
        CHECK_EQ(survivor.view(), R"({"j":2})"sv);
    }

    // Engine: moves carry the handle; views follow the handle; moved-from engines are
    // empty and their calls throw TARN_NULL_ARGUMENT.
    {
        tarn::Engine a = manual_engine();
        const tarn_engine* handle = a.get();
        CHECK(handle != nullptr);
        CHECK(static_cast<bool>(a));
        tarn::Store view = a.store();
        CHECK_NOTHROW(view.write("m", "k", "1"));

        tarn::Engine b(std::move(a));
        CHECK(!a);
        CHECK(a.get() == nullptr);
        CHECK(b.get() == handle);
        CHECK_EQ(view.read("m", "k").json, "1"sv);
        CHECK_EQ(b.store().read("m", "k").json, "1"sv);
        CHECK(view.get() == handle);
        CHECK(b.clock().get() == handle);

        CHECK_STATUS(TARN_NULL_ARGUMENT, a.store().read("m", "k"));
        CHECK_STATUS(TARN_NULL_ARGUMENT, a.store().write("m", "k", "2"));
        CHECK_STATUS(TARN_NULL_ARGUMENT, a.clock().now());
        CHECK_STATUS(TARN_NULL_ARGUMENT, a.settle());
        CHECK_STATUS(TARN_NULL_ARGUMENT, a.close());
        CHECK_STATUS(TARN_NULL_ARGUMENT, a.open_session("x"));
        CHECK_STATUS(TARN_NULL_ARGUMENT, a.bus().signal("m", "k"));
        CHECK(a.bus().get() == nullptr);
        CHECK(b.bus().get() == handle);

        tarn::Engine c = manual_engine();
        CHECK_NOTHROW(c.store().write("other", "k", "1"));
        c = std::move(b);  // c's old engine (with a document) is freed
        CHECK(!b);
        CHECK(c.get() == handle);
        CHECK_EQ(c.store().read("m", "k").json, "1"sv);
        tarn::Engine& alias = c;
        c = std::move(alias);
        CHECK(c.get() == handle);

        a = std::move(c);  // assigning into an empty engine
        CHECK(a.get() == handle);
        CHECK_EQ(a.store().list("m"), R"(["k"])"sv);

        tarn::Engine adopted(a.release());
        CHECK(!a);
        CHECK(adopted.get() == handle);

        std::vector<tarn::Engine> engines;
        for (int i = 0; i < 6; ++i) {
            engines.push_back(manual_engine());  // reallocation moves them
            engines.back().store().write("n", std::to_string(i), std::to_string(i));
        }
        bool separate = true;
        for (int i = 0; i < 6; ++i) {
            separate = separate && engines[static_cast<std::size_t>(i)].store().list("n") ==
                                       "[\"" + std::to_string(i) + "\"]";
        }
        CHECK(separate);
        engines.emplace_back(std::move(adopted));
        CHECK_EQ(engines.back().store().read("m", "k").json, "1"sv);
    }

    // EngineBuilder: build does not consume it; moved-from builders throw.
    {
        tarn::EngineBuilder b1;
        b1.workers(1).manual_clock(42);
        tarn::Engine e1 = b1.build();
        tarn::Engine e2 = b1.build();
        CHECK(e1.get() != e2.get());
        CHECK_NOTHROW(e1.store().write("b", "k", "1"));
        CHECK(!e2.store().try_read("b", "k").has_value());
        CHECK_EQ(e2.clock().now(), 42u);

        tarn::EngineBuilder b2(std::move(b1));
        CHECK(b1.get() == nullptr);
        CHECK(b2.get() != nullptr);
        CHECK_STATUS(TARN_NULL_ARGUMENT, b1.workers(2));
        CHECK_STATUS(TARN_NULL_ARGUMENT, b1.change_log_capacity(8));
        CHECK_STATUS(TARN_NULL_ARGUMENT, b1.build());
        tarn::Engine e3 = b2.build();
        CHECK_EQ(e3.clock().now(), 42u);

        tarn::EngineBuilder b3;
        b3 = std::move(b2);  // b3's own builder is freed
        CHECK(b2.get() == nullptr);
        CHECK_EQ(b3.manual_clock(7).build().clock().now(), 7u);
    }

    // Many short-lived engines, and exceptions unwinding through live resources.
    for (int i = 0; i < 10; ++i) {
        tarn::Engine e = (i % 2 == 0) ? tarn::Engine::create() : manual_engine();
        e.store().write("b", "k", "[" + std::to_string(i) + "]");
        CHECK_EQ(e.store().read("b", "k").json, "[" + std::to_string(i) + "]");
        if (i % 3 == 0) {
            e.close();
        }
    }
    CHECK_STATUS(TARN_NOT_FOUND, throws_with_resources_alive());
}

// ---------------------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------------------

// Starts `n` threads that all run `body(i)` once all of them have arrived (a spin latch:
// no timed waits), and joins them.
static void race(int n, const std::function<void(int)>& body) {
    std::atomic<int> arrived{0};
    std::vector<std::thread> threads;
    threads.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
        threads.emplace_back([&, i] {
            arrived.fetch_add(1, std::memory_order_acq_rel);
            while (arrived.load(std::memory_order_acquire) < n) {
                std::this_thread::yield();
            }
            body(i);
        });
    }
    for (std::thread& t : threads) {
        t.join();
    }
}

static void test_threads() {
    constexpr int N = 8;
    tarn::Engine engine = tarn::EngineBuilder().workers(4).manual_clock(T0).build();
    const tarn::Store store = engine.store();

    // fail_if_exists: of 8 racing writers exactly one wins, in every round.
    int bad_rounds = 0;
    for (int round = 0; round < 20; ++round) {
        const std::string key = "race" + std::to_string(round);
        std::atomic<int> wins{0}, exists{0}, other{0}, winner{-1};
        std::atomic<bool> messages_ok{true};
        race(N, [&](int i) {
            tarn::WriteOptions once;
            once.fail_if_exists = true;
            try {
                store.write("race", key, "{\"t\":" + std::to_string(i) + "}", once);
                ++wins;
                winner = i;
            } catch (const tarn::Error& e) {
                // The message is this thread's own (tarn_last_error is thread-local).
                if (!contains(e.detail(), key)) {
                    messages_ok = false;
                }
                (e.status() == TARN_EXISTS ? exists : other)++;
            } catch (...) {
                ++other;
            }
        });
        const bool ok = wins == 1 && exists == N - 1 && other == 0 && messages_ok &&
                        store.read("race", key).json ==
                            "{\"t\":" + std::to_string(winner.load()) + "}";
        if (!ok) {
            ++bad_rounds;
            std::fprintf(stderr, "round %d: wins %d exists %d other %d\n", round, wins.load(),
                         exists.load(), other.load());
        }
    }
    CHECK_EQ(bad_rounds, 0);
    {
        std::vector<std::string> keys;
        for (int round = 0; round < 20; ++round) {
            keys.push_back("race" + std::to_string(round));
        }
        std::sort(keys.begin(), keys.end());
        std::string expected = "[";
        for (const std::string& k : keys) {
            expected += (expected.size() > 1 ? ",\"" : "\"") + k + "\"";
        }
        CHECK_EQ(store.list("race"), expected + "]");
    }

    // if_version 0 ("only if absent"): one winner, the rest conflict.
    {
        std::atomic<int> wins{0}, conflicts{0}, other{0};
        race(N, [&](int i) {
            tarn::WriteOptions absent;
            absent.if_version = 0;
            try {
                store.write("race", "cas", std::to_string(i), absent);
                ++wins;
            } catch (const tarn::Error& e) {
                (e.status() == TARN_VERSION_CONFLICT ? conflicts : other)++;
            }
        });
        CHECK_EQ(wins.load(), 1);
        CHECK_EQ(conflicts.load(), N - 1);
        CHECK_EQ(other.load(), 0);
    }

    // Optimistic increments with if_version: no update is lost.
    {
        constexpr int PER_THREAD = 25;
        store.write("race", "counter", "0");
        std::atomic<int> errors{0};
        std::atomic<long> retries{0};
        race(N, [&](int) {
            for (int done = 0; done < PER_THREAD;) {
                try {
                    const tarn::Document d = store.read("race", "counter");
                    const long n = std::stol(d.json);
                    tarn::WriteOptions cas;
                    cas.if_version = d.info.version;
                    store.write("race", "counter", std::to_string(n + 1), cas);
                    ++done;
                } catch (const tarn::Error& e) {
                    if (e.status() == TARN_VERSION_CONFLICT) {
                        ++retries;
                    } else {
                        ++errors;
                        return;
                    }
                }
            }
        });
        CHECK_EQ(errors.load(), 0);
        CHECK_EQ(store.read("race", "counter").json, std::to_string(N * PER_THREAD));
    }

    // Reads, patches, clock and listing from many threads at once.
    {
        store.write("race", "doc", R"({"n":0})");
        std::atomic<int> failures{0};
        const tarn::Clock clock = engine.clock();
        race(N, [&](int i) {
            try {
                for (int j = 0; j < 20; ++j) {
                    if (i % 2 == 0) {
                        store.patch("race", "doc",
                                    "[{\"op\":\"replace\",\"path\":\"/n\",\"value\":" +
                                        std::to_string(i * 100 + j) + "}]");
                    } else {
                        const tarn::Document d = store.read("race", "doc");
                        if (d.json.substr(0, 5) != R"({"n":)") {
                            ++failures;
                        }
                        (void)store.list("race");
                    }
                    clock.advance(1ms);
                }
            } catch (...) {
                ++failures;
            }
        });
        CHECK_EQ(failures.load(), 0);
        CHECK_EQ(clock.now(), T0 + N * 20);
    }
    CHECK_NOTHROW(engine.settle());
}

int main() {
    const std::pair<const char*, void (*)()> tests[] = {
        {"identity", test_identity},
        {"operations", test_operations},
        {"not_found_and_exists", test_not_found_and_exists},
        {"invalid_arguments", test_invalid_arguments},
        {"json_and_patch_errors", test_json_and_patch_errors},
        {"version_conflicts", test_version_conflicts},
        {"option_structs", test_option_structs},
        {"change_meta", test_change_meta},
        {"limits", test_limits},
        {"clock_and_closed", test_clock_and_closed},
        {"ttl", test_ttl},
        {"raii_and_moves", test_raii_and_moves},
        {"threads", test_threads},
    };
    for (const auto& t : tests) {
        try {
            t.second();
        } catch (const std::exception& e) {
            record(false, __FILE__, __LINE__, std::string(t.first) + ": uncaught " + e.what());
        }
    }
    std::printf("test_store.cpp: %d passed, %d failed\n", g_passed.load(), g_failed.load());
    // Flush now: the leak checker runs at exit and, on a leak, ends the process before
    // stdio would flush a piped stdout.
    std::fflush(stdout);
    return g_failed.load() == 0 ? 0 : 1;
}
