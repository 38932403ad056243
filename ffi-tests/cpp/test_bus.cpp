// test_bus.cpp: the C++ wrapper (include/tarn.hpp) over the event bus and sessions.
//
// Built and run by tests/ffi.rs (cpp_programs) with -std=c++17 -Wall -Wextra -Werror
// -pedantic under AddressSanitizer (leak detection on) and UBSan, so every Listener,
// Session and std::function the wrapper owns must be released, and a callback must never
// run on a destroyed std::function. No test framework: each CHECK counts a pass or
// prints file:line of a failure; the exit code is non-zero if any check failed.
//
// Nothing sleeps: threads meet on condition variables and atomics (bounded waits, 30 s,
// only so that a broken library fails instead of hanging), time comes from the manual
// clock, and Engine::settle() waits until every due callback has run.
//
// What this adds to the C tests: RAII order (a Listener destroyed while its callback
// runs waits for it; one destroyed from its own callback does not; Listeners and
// Sessions that outlive their Engine), moves, std::function callbacks that capture
// state and call back into the engine, exceptions contained and counted, the wildcard
// matrix, values on/off, signals, sessions (owned keys, presence, leases), both bound
// policies with exact counts, and watching from a version (TARN_TOO_OLD).

#include "tarn.hpp"

#include <poll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
using namespace std::string_view_literals;

#include "check.hpp"


static constexpr std::uint64_t T0 = 1'700'000'000'000ULL;

// A bound on every wait for another thread, so that a broken library fails the check
// instead of hanging the test. Never a sleep: waits end as soon as their condition holds.
static constexpr auto LONG_WAIT = std::chrono::seconds(30);

static tarn::Engine manual_engine(std::uint32_t workers = 2) {
    return tarn::EngineBuilder().workers(workers).manual_clock(T0).build();
}

// ---------------------------------------------------------------------------------------
// Reading event JSON: a small, strict splitter of JSON objects into raw member texts
// ---------------------------------------------------------------------------------------

namespace json {

static constexpr std::size_t npos = std::string_view::npos;

static std::size_t ws(std::string_view s, std::size_t i) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r')) {
        ++i;
    }
    return i;
}

// The index just past the JSON value that starts at `i` (after white space), or npos.
static std::size_t skip(std::string_view s, std::size_t i) {
    i = ws(s, i);
    if (i >= s.size()) {
        return npos;
    }
    const char c = s[i];
    if (c == '"') {
        for (++i; i < s.size(); ++i) {
            if (s[i] == '\\') {
                ++i;
            } else if (s[i] == '"') {
                return i + 1;
            }
        }
        return npos;
    }
    if (c == '{' || c == '[') {
        const char close = c == '{' ? '}' : ']';
        i = ws(s, i + 1);
        if (i < s.size() && s[i] == close) {
            return i + 1;
        }
        for (;;) {
            if (c == '{') {
                i = ws(s, i);
                if (i >= s.size() || s[i] != '"') {
                    return npos;
                }
                i = skip(s, i);
                if (i == npos) {
                    return npos;
                }
                i = ws(s, i);
                if (i >= s.size() || s[i] != ':') {
                    return npos;
                }
                ++i;
            }
            i = skip(s, i);
            if (i == npos) {
                return npos;
            }
            i = ws(s, i);
            if (i >= s.size()) {
                return npos;
            }
            if (s[i] == ',') {
                ++i;
                continue;
            }
            return s[i] == close ? i + 1 : npos;
        }
    }
    std::size_t j = i;
    while (j < s.size() && std::string_view(",}] \n\t\r").find(s[j]) == npos) {
        ++j;
    }
    return j == i ? npos : j;
}

// The text of a JSON string literal (simple escapes; \u only below 0x80).
static std::string unquote(std::string_view lit) {
    std::string out;
    if (lit.size() < 2 || lit.front() != '"' || lit.back() != '"') {
        return "<not a string: " + std::string(lit) + ">";
    }
    for (std::size_t i = 1; i + 1 < lit.size(); ++i) {
        char c = lit[i];
        if (c != '\\') {
            out += c;
            continue;
        }
        c = lit[++i];
        switch (c) {
            case 'n': out += '\n'; break;
            case 't': out += '\t'; break;
            case 'r': out += '\r'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'u': {
                const unsigned long cp = std::stoul(std::string(lit.substr(i + 1, 4)), nullptr, 16);
                out += cp < 0x80 ? static_cast<char>(cp) : '?';
                i += 4;
                break;
            }
            default: out += c; break;  // " \ /
        }
    }
    return out;
}

using Members = std::vector<std::pair<std::string, std::string>>;

// The members of a JSON object in order (name, raw value text); nullopt if `s` is not
// exactly one JSON object.
static std::optional<Members> members(std::string_view s) {
    Members out;
    std::size_t i = ws(s, 0);
    if (i >= s.size() || s[i] != '{' || skip(s, i) == npos || ws(s, skip(s, i)) != s.size()) {
        return std::nullopt;
    }
    i = ws(s, i + 1);
    if (s[i] == '}') {
        return out;
    }
    for (;;) {
        i = ws(s, i);
        const std::size_t name_end = skip(s, i);
        std::string name = unquote(s.substr(i, name_end - i));
        i = ws(s, name_end) + 1;  // past ':'
        const std::size_t start = ws(s, i);
        const std::size_t end = skip(s, start);
        out.emplace_back(std::move(name), std::string(s.substr(start, end - start)));
        i = ws(s, end);
        if (s[i] == '}') {
            return out;
        }
        ++i;  // ','
    }
}

}  // namespace json

// One event as the wrapper hands it over, split into its members.
struct Event {
    std::string raw;
    json::Members fields;
    bool ok = false;

    // The raw JSON text of a member ("<missing>" if absent).
    std::string at(std::string_view name) const {
        for (const auto& f : fields) {
            if (f.first == name) {
                return f.second;
            }
        }
        return "<missing>";
    }
    bool is_null(std::string_view name) const { return at(name) == "null"; }
    std::string str(std::string_view name) const { return json::unquote(at(name)); }
    std::uint64_t num(std::string_view name) const {
        const std::string t = at(name);
        if (t.empty() || t.find_first_not_of("0123456789") != std::string::npos) {
            return ~0ULL;
        }
        return std::stoull(t);
    }
    std::string kind() const { return str("kind"); }
    std::string where() const { return str("bucket") + "/" + str("key"); }
    std::string names() const {
        std::string s;
        for (const auto& f : fields) {
            s += (s.empty() ? "" : ",") + f.first;
        }
        return s;
    }
};

static Event parse(std::string_view text) {
    Event e;
    e.raw = std::string(text);
    if (std::optional<json::Members> m = json::members(text)) {
        e.fields = std::move(*m);
        e.ok = true;
    }
    return e;
}

static constexpr const char* EVENT_FIELDS =
    "kind,bucket,key,version,timestamp_ms,session,request_id,user_data,value,ops,missed";

// Takes every event waiting on a pull listener (no wait).
static std::vector<Event> drain(const tarn::Listener& l) {
    std::vector<Event> out;
    while (std::optional<std::string> e = l.next()) {
        out.push_back(parse(*e));
    }
    return out;
}

static std::string wheres(const std::vector<Event>& events) {
    std::string s;
    for (const Event& e : events) {
        s += (s.empty() ? "" : ",") + e.where();
    }
    return s;
}

static std::string kinds(const std::vector<Event>& events) {
    std::string s;
    for (const Event& e : events) {
        s += (s.empty() ? "" : ",") + e.kind();
    }
    return s;
}

static bool all_parse(const std::vector<Event>& events) {
    return std::all_of(events.begin(), events.end(), [](const Event& e) {
        return e.ok && e.names() == EVENT_FIELDS;
    });
}

// Collects the events a callback receives (from engine threads).
class Collector {
public:
    void push(std::string_view event) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            events_.push_back(parse(event));
        }
        cv_.notify_all();
    }
    std::vector<Event> events() const {
        std::lock_guard<std::mutex> lock(mu_);
        return events_;
    }
    std::size_t size() const {
        std::lock_guard<std::mutex> lock(mu_);
        return events_.size();
    }
    // Waits until at least `n` events came (bounded); whether they did.
    bool wait_for(std::size_t n) {
        std::unique_lock<std::mutex> lock(mu_);
        return cv_.wait_for(lock, LONG_WAIT, [&] { return events_.size() >= n; });
    }

private:
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::vector<Event> events_;
};

static std::function<void(std::string_view)> into(const std::shared_ptr<Collector>& c) {
    return [c](std::string_view event) { c->push(event); };
}

// A one-shot flag threads wait on.
class Flag {
public:
    void set() {
        {
            std::lock_guard<std::mutex> lock(mu_);
            set_ = true;
        }
        cv_.notify_all();
    }
    bool wait() {
        std::unique_lock<std::mutex> lock(mu_);
        return cv_.wait_for(lock, LONG_WAIT, [&] { return set_; });
    }
    bool is_set() const {
        std::lock_guard<std::mutex> lock(mu_);
        return set_;
    }

private:
    mutable std::mutex mu_;
    std::condition_variable cv_;
    bool set_ = false;
};

// The raw C view of a listener id: whether the engine still knows it.
static tarn_status raw_listener_status(const tarn_engine* engine, std::uint64_t id) {
    tarn_listener_stats st{0, 0, 0};
    return tarn_listener_get_stats(engine, id, &st);
}

static tarn_status raw_session_status(const tarn_engine* engine, std::uint64_t id) {
    bool open = false;
    return tarn_session_is_open(engine, id, &open);
}

// ---------------------------------------------------------------------------------------
// Event shape, change metadata, values on and off
// ---------------------------------------------------------------------------------------

static void test_events_and_values() {
    CHECK_EQ(tarn::header_abi_version, 2u);
    CHECK_EQ(tarn::status_name(TARN_TOO_OLD), "TARN_TOO_OLD"sv);

    tarn::Engine engine = manual_engine();
    tarn::Store store = engine.store();
    tarn::Bus bus = engine.bus();
    CHECK(bus.get() == engine.get());

    tarn::ListenOptions values;
    values.send_values = true;
    tarn::Listener with = bus.subscribe("v", "*", values);
    tarn::Listener without = bus.subscribe("v", "*");
    CHECK(with.id() != 0 && without.id() != 0 && with.id() != without.id());
    CHECK(!with.has_callback());
    CHECK(with.get() == engine.get());
    CHECK(!with.next().has_value());  // nothing yet: nullopt, not an exception

    // A write with a request id and user data.
    tarn::WriteOptions meta;
    meta.request_id = "req-1";
    meta.user_data = R"({"who":"test","n":[1,2]})";
    const std::uint64_t v1 = store.write("v", "a", R"({"n":1})", meta);
    const Event w = parse(with.next().value_or(""));
    CHECK(w.ok);
    CHECK_EQ(w.names(), std::string(EVENT_FIELDS));
    CHECK_EQ(w.kind(), "write");
    CHECK_EQ(w.str("bucket"), "v");
    CHECK_EQ(w.str("key"), "a");
    CHECK_EQ(w.num("version"), v1);
    CHECK_EQ(w.num("timestamp_ms"), T0);
    CHECK(w.is_null("session"));
    CHECK_EQ(w.str("request_id"), "req-1");
    CHECK(json::members(w.at("user_data")).has_value());
    CHECK(contains(w.at("user_data"), R"("who":"test")"));
    CHECK(contains(w.at("user_data"), R"("n":[1,2])"));
    CHECK_EQ(w.at("value"), R"({"n":1})");
    CHECK(w.is_null("ops"));
    CHECK_EQ(w.num("missed"), 0u);
    const Event w0 = parse(without.next().value_or(""));
    CHECK_EQ(w0.kind(), "write");
    CHECK_EQ(w0.num("version"), v1);
    CHECK_EQ(w0.str("request_id"), "req-1");
    CHECK(w0.is_null("value"));  // values only when asked

    // A patch carries its operations (and the new document, when asked).
    CHECK_EQ(engine.clock().advance(5ms), T0 + 5);
    tarn::PatchOptions po;
    po.request_id = "req-2";
    const std::string ops = R"([{"op":"replace","path":"/n","value":2}])";
    const tarn::PatchResult p = store.patch("v", "a", ops, po);
    const Event pe = parse(with.next().value_or(""));
    CHECK_EQ(pe.kind(), "patch");
    CHECK_EQ(pe.num("version"), p.version);
    CHECK_EQ(pe.num("timestamp_ms"), T0 + 5);
    CHECK_EQ(pe.at("ops"), ops);
    CHECK_EQ(pe.at("value"), R"({"n":2})");
    CHECK_EQ(pe.str("request_id"), "req-2");
    CHECK(pe.is_null("user_data"));
    const Event pe0 = parse(without.next().value_or(""));
    CHECK_EQ(pe0.at("ops"), ops);
    CHECK(pe0.is_null("value"));

    // A removal has no value, with or without values.
    tarn::RemoveOptions ro;
    ro.user_data = "[true]";
    const std::uint64_t vr = store.remove("v", "a", ro);
    const Event re = parse(with.next().value_or(""));
    CHECK_EQ(re.kind(), "remove");
    CHECK_EQ(re.num("version"), vr);
    CHECK(re.is_null("value"));
    CHECK_EQ(re.at("user_data"), "[true]");
    CHECK(re.is_null("request_id"));
    CHECK(parse(without.next().value_or("")).is_null("value"));

    // A TTL passing on the manual clock is an "expire" event, once the sweep ran.
    tarn::WriteOptions ttl;
    ttl.ttl = 10ms;
    const std::uint64_t vt = store.write("v", "t", "0", ttl);
    CHECK_EQ(drain(with).size(), 1u);
    CHECK_EQ(drain(without).size(), 1u);
    CHECK_NOTHROW(engine.clock().advance(10ms));
    CHECK_NOTHROW(engine.settle());
    const std::vector<Event> expired = drain(with);
    CHECK_EQ(kinds(expired), "expire");
    CHECK(expired.size() == 1 && expired[0].str("key") == "t" && expired[0].is_null("value"));
    // An expiry is a change: it takes a new store version.
    CHECK(expired.size() == 1 && expired[0].num("version") > vt &&
          expired[0].num("version") == store.last_version());
    CHECK(expired.size() == 1 && expired[0].num("timestamp_ms") == T0 + 15);
    CHECK_EQ(kinds(drain(without)), "expire");

    // Keys that need escaping in JSON come through intact.
    const std::string odd = "q\"u\\o/t\xc3\xa9";
    CHECK_NOTHROW(store.write("v", odd, "[1]"));
    const std::vector<Event> escaped = drain(with);
    CHECK(escaped.size() == 1 && escaped[0].ok && escaped[0].str("key") == odd);
    CHECK(escaped.size() == 1 && contains(escaped[0].raw, "t\xc3\xa9"));
    CHECK(escaped.size() == 1 && escaped[0].at("value") == "[1]");
    CHECK_EQ(drain(without).size(), 1u);

    // Bad metadata is refused before anything changes (and nothing is published).
    const std::uint64_t last = store.last_version();
    tarn::WriteOptions bad_user;
    bad_user.user_data = "{nope";
    CHECK_STATUS(TARN_INVALID_JSON, store.write("v", "m", "1", bad_user));
    tarn::WriteOptions empty_user;
    empty_user.user_data = "";
    CHECK_STATUS(TARN_INVALID_JSON, store.write("v", "m", "1", empty_user));
    tarn::WriteOptions nul_request;
    nul_request.request_id = std::string("r\0x", 3);
    const std::string m = CHECK_STATUS(TARN_INVALID_ARGUMENT, store.write("v", "m", "1", nul_request));
    CHECK(contains(m, "NUL"));
    tarn::PatchOptions bad_patch;
    bad_patch.user_data = "]";
    CHECK_NOTHROW(store.write("v", "m", R"({"n":0})"));
    CHECK_EQ(drain(with).size(), 1u);
    CHECK_EQ(drain(without).size(), 1u);
    CHECK_STATUS(TARN_INVALID_JSON, store.patch("v", "m", "[]", bad_patch));
    tarn::RemoveOptions bad_remove;
    bad_remove.request_id = std::string("\0", 1);
    CHECK_STATUS(TARN_INVALID_ARGUMENT, store.remove("v", "m", bad_remove));
    CHECK_EQ(store.read("v", "m").json, R"({"n":0})"sv);
    CHECK_EQ(store.last_version(), last + 1);
    CHECK(!with.next().has_value());
    CHECK(!without.next().has_value());

    // Every event of this test was one well-formed object with all eleven members.
    CHECK(all_parse({w, w0, pe, pe0, re}));
}

// ---------------------------------------------------------------------------------------
// The wildcard matrix, for pull and callback listeners alike
// ---------------------------------------------------------------------------------------

static void test_wildcard_matrix() {
    tarn::Engine engine = manual_engine();
    tarn::Bus bus = engine.bus();
    struct Pattern {
        const char* bucket;
        const char* key;
        const char* expect;
    };
    const Pattern patterns[] = {
        {"b1", "k1", "b1/k1"},
        {"b1", "*", "b1/k1,b1/k2"},
        {"*", "k1", "b1/k1,b2/k1"},
        {"*", "*", "b1/k1,b1/k2,b2/k1,b2/k2"},
        {"b3", "*", ""},
        {"b1", "k3", ""},
    };
    std::vector<tarn::Listener> pulls;
    std::vector<tarn::Listener> callbacks;
    std::vector<std::shared_ptr<Collector>> collected;
    for (const Pattern& p : patterns) {
        pulls.push_back(bus.subscribe(p.bucket, p.key));
        collected.push_back(std::make_shared<Collector>());
        callbacks.push_back(bus.listen(p.bucket, p.key, into(collected.back())));
    }
    for (const char* b : {"b1", "b2"}) {
        for (const char* k : {"k1", "k2"}) {
            engine.store().write(b, k, "1");
        }
    }
    CHECK_NOTHROW(engine.settle());
    for (std::size_t i = 0; i < pulls.size(); ++i) {
        const std::string what = std::string(patterns[i].bucket) + "/" + patterns[i].key;
        const std::vector<Event> pulled = drain(pulls[i]);
        record(wheres(pulled) == patterns[i].expect, __FILE__, __LINE__,
               "pull " + what + " got " + wheres(pulled));
        const std::vector<Event> called = collected[i]->events();
        record(wheres(called) == patterns[i].expect, __FILE__, __LINE__,
               "callback " + what + " got " + wheres(called));
        CHECK(all_parse(pulled) && all_parse(called));
    }

    // Presence events are on the system bucket "$sessions": the global pattern sees
    // them, a bucket pattern does not.
    tarn::Session s = engine.open_session("matrix");
    CHECK_NOTHROW(engine.settle());
    const std::vector<Event> global = drain(pulls[3]);
    CHECK_EQ(wheres(global), "$sessions/" + std::to_string(s.id()));
    CHECK_EQ(kinds(global), "session_open");
    CHECK(drain(pulls[1]).empty());
    CHECK_EQ(collected[3]->size(), 5u);
    CHECK_EQ(collected[1]->size(), 2u);

    // A freed listener hears nothing more; the others go on.
    pulls[0].reset();
    callbacks[0].reset();
    engine.store().write("b1", "k1", "2");
    CHECK_NOTHROW(engine.settle());
    CHECK_EQ(collected[0]->size(), 1u);
    CHECK_EQ(collected[1]->size(), 3u);
    CHECK_EQ(wheres(drain(pulls[2])), "b1/k1");
}

// ---------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------

static void test_signals() {
    tarn::Engine engine = manual_engine();
    tarn::Bus bus = engine.bus();
    tarn::Store store = engine.store();
    tarn::ListenOptions values;
    values.send_values = true;
    tarn::Listener with = bus.subscribe("chat", "*", values);
    tarn::Listener without = bus.subscribe("chat", "room1");
    auto c = std::make_shared<Collector>();
    tarn::Listener cb = bus.listen("*", "room1", into(c), values);

    CHECK_EQ(engine.clock().advance(7ms), T0 + 7);
    CHECK_NOTHROW(bus.signal("chat", "room1", R"({"text":"hi"})"sv));
    CHECK_NOTHROW(bus.signal("chat", "room2"));
    tarn::Session s = engine.open_session("talker");
    CHECK_NOTHROW(bus.signal("chat", "room1", "[]"sv, s.id()));

    const std::vector<Event> got = drain(with);
    CHECK_EQ(wheres(got), "chat/room1,chat/room2,chat/room1");
    CHECK_EQ(kinds(got), "signal,signal,signal");
    CHECK(all_parse(got));
    if (got.size() == 3) {
        CHECK_EQ(got[0].num("version"), 0u);
        CHECK_EQ(got[0].num("timestamp_ms"), T0 + 7);
        CHECK_EQ(got[0].at("value"), R"({"text":"hi"})");
        CHECK(got[0].is_null("session"));
        CHECK(got[1].is_null("value"));
        CHECK_EQ(got[2].at("value"), "[]");
        CHECK_EQ(got[2].num("session"), s.id());
    }
    const std::vector<Event> plain = drain(without);
    CHECK_EQ(wheres(plain), "chat/room1,chat/room1");
    CHECK(std::all_of(plain.begin(), plain.end(), [](const Event& e) { return e.is_null("value"); }));
    CHECK_NOTHROW(engine.settle());
    const std::vector<Event> called = c->events();
    CHECK_EQ(kinds(called), "signal,signal");
    CHECK(called.size() == 2 && called[0].at("value") == R"({"text":"hi"})");

    // Signals are never stored.
    CHECK_STATUS(TARN_NOT_FOUND, store.read("chat", "room1"));
    CHECK_EQ(store.last_version(), 0u);
    CHECK_EQ(store.buckets(), "[]"sv);

    // Refused signals reach nobody.
    CHECK_STATUS(TARN_INVALID_JSON, bus.signal("chat", "room1", "{bad"sv));
    CHECK_STATUS(TARN_INVALID_JSON, bus.signal("chat", "room1", ""sv));  // empty is not "none"
    CHECK_STATUS(TARN_INVALID_ARGUMENT, bus.signal("$sessions", "x"));
    CHECK_STATUS(TARN_INVALID_ARGUMENT, bus.signal("*", "room1"));
    CHECK_STATUS(TARN_INVALID_ARGUMENT, bus.signal("chat", ""));
    CHECK_STATUS(TARN_INVALID_ARGUMENT, bus.signal("chat", std::string_view("room1\0x", 7)));
    CHECK_STATUS(TARN_NOT_FOUND, bus.signal("chat", "room1", std::nullopt, s.id() + 100));
    CHECK(!with.next().has_value());
    CHECK(!without.next().has_value());

    // A session's own signal is skipped by its ignore_own listener, not by others.
    tarn::ListenOptions own;
    own.session = s.id();
    own.ignore_own = true;
    tarn::Listener mine = bus.subscribe("chat", "*", own);
    CHECK_NOTHROW(bus.signal("chat", "a", std::nullopt, s.id()));
    CHECK_NOTHROW(bus.signal("chat", "b"));
    CHECK_EQ(wheres(drain(mine)), "chat/b");
    CHECK_EQ(wheres(drain(with)), "chat/a,chat/b");
    // And so are its own changes.
    tarn::WriteOptions as_s;
    as_s.session = s.id();
    CHECK_NOTHROW(store.write("chat", "mine", "1", as_s));
    CHECK_NOTHROW(store.write("chat", "theirs", "1"));
    CHECK_EQ(wheres(drain(mine)), "chat/theirs");
    const std::vector<Event> both = drain(with);
    CHECK_EQ(wheres(both), "chat/mine,chat/theirs");
    CHECK(both.size() == 2 && both[0].num("session") == s.id() && both[1].is_null("session"));
    CHECK_NOTHROW(engine.settle());
}

// ---------------------------------------------------------------------------------------
// std::function callbacks: captured state, engine threads, calling back into the engine
// ---------------------------------------------------------------------------------------

static void test_callbacks_call_the_engine() {
    tarn::Engine engine = tarn::EngineBuilder().workers(3).manual_clock(T0).build();
    tarn::Store store = engine.store();
    const std::thread::id main_thread = std::this_thread::get_id();

    struct State {
        std::mutex mu;
        std::vector<std::string> order;
        std::set<std::thread::id> threads;
        int on_main_thread = 0;
        std::atomic<int> in_flight{0};
        std::atomic<int> max_in_flight{0};
        std::atomic<int> write_errors{0};
        std::atomic<int> read_mismatches{0};
        std::atomic<int> settle_refused{0};
    };
    auto st = std::make_shared<State>();
    tarn::ListenOptions values;
    values.send_values = true;
    const tarn::Engine& eng = engine;
    tarn::Listener copier = engine.bus().listen(
        "src", "*",
        [st, store, main_thread, &eng](std::string_view json_text) {
            const int now = ++st->in_flight;
            int seen = st->max_in_flight.load();
            while (now > seen && !st->max_in_flight.compare_exchange_weak(seen, now)) {
            }
            const Event e = parse(json_text);
            const std::string key = e.str("key");
            {
                std::lock_guard<std::mutex> lock(st->mu);
                st->order.push_back(key);
                st->threads.insert(std::this_thread::get_id());
                st->on_main_thread += std::this_thread::get_id() == main_thread ? 1 : 0;
            }
            // Back into the engine from its own worker: a read, and a write to another
            // bucket that carries the source version as its request id.
            try {
                if (store.read("src", key).json != e.at("value")) {
                    ++st->read_mismatches;
                }
                tarn::WriteOptions o;
                o.request_id = "from-" + std::to_string(e.num("version"));
                o.user_data = R"({"via":"callback"})";
                store.write("dst", key, "{\"copy\":" + e.at("value") + "}", o);
            } catch (const tarn::Error&) {
                ++st->write_errors;
            }
            // settle() would wait for this very callback: refused.
            try {
                eng.settle();
            } catch (const tarn::Error& err) {
                st->settle_refused += err.status() == TARN_NOT_SUPPORTED ? 1 : 0;
            }
            --st->in_flight;
        },
        values);
    CHECK(copier.has_callback());
    tarn::Listener dst = engine.bus().subscribe("dst", "*");

    constexpr int N = 20;
    std::map<std::string, std::uint64_t> src_version;
    for (int i = 0; i < N; ++i) {
        const std::string key = std::string(i < 10 ? "k0" : "k") + std::to_string(i);
        src_version[key] = store.write("src", key, "{\"i\":" + std::to_string(i) + "}");
    }
    CHECK_NOTHROW(engine.settle());  // every callback ran, and so did their writes

    {
        std::lock_guard<std::mutex> lock(st->mu);
        std::string order;
        std::string expect;
        for (const std::string& k : st->order) {
            order += k + ",";
        }
        for (const auto& kv : src_version) {
            expect += kv.first + ",";
        }
        CHECK_EQ(order, expect);  // one listener's callbacks run in commit order
        CHECK_EQ(st->on_main_thread, 0);
        CHECK(!st->threads.empty() && st->threads.size() <= 3);
    }
    CHECK_EQ(st->max_in_flight.load(), 1);
    CHECK_EQ(st->write_errors.load(), 0);
    CHECK_EQ(st->read_mismatches.load(), 0);
    CHECK_EQ(st->settle_refused.load(), N);
    CHECK_EQ(store.read("dst", "k05").json, R"({"copy":{"i":5}})"sv);
    CHECK_EQ(store.read("dst", "k19").json, R"({"copy":{"i":19}})"sv);

    const std::vector<Event> copies = drain(dst);
    CHECK_EQ(copies.size(), static_cast<std::size_t>(N));
    bool copies_ok = copies.size() == static_cast<std::size_t>(N);
    for (const Event& e : copies) {
        copies_ok = copies_ok && e.kind() == "write" && e.str("bucket") == "dst" &&
                    e.str("request_id") == "from-" + std::to_string(src_version[e.str("key")]) &&
                    e.at("user_data") == R"({"via":"callback"})";
    }
    CHECK(copies_ok);
    const tarn_listener_stats stats = copier.stats();
    CHECK_EQ(stats.delivered, static_cast<std::uint64_t>(N));
    CHECK_EQ(stats.missed, 0u);
    CHECK_EQ(stats.panics, 0u);
    CHECK_EQ(copier.exceptions(), 0u);

    // A callback listener cannot be pulled and has no fd.
    CHECK_STATUS(TARN_NOT_SUPPORTED, copier.next());
    CHECK_STATUS(TARN_NOT_SUPPORTED, copier.fd());

    // Many writer threads, one listener: still one callback at a time, none lost.
    {
        constexpr int THREADS = 4;
        constexpr int PER_THREAD = 50;
        auto count = std::make_shared<std::atomic<int>>(0);
        auto busy = std::make_shared<std::atomic<int>>(0);
        auto overlap = std::make_shared<std::atomic<int>>(0);
        tarn::ListenOptions big;
        big.capacity = THREADS * PER_THREAD;
        tarn::Listener counter = engine.bus().listen(
            "many", "*",
            [count, busy, overlap](std::string_view) {
                if (busy->fetch_add(1) != 0) {
                    ++*overlap;
                }
                ++*count;
                busy->fetch_sub(1);
            },
            big);
        std::atomic<int> arrived{0};
        std::vector<std::thread> writers;
        for (int t = 0; t < THREADS; ++t) {
            writers.emplace_back([&, t] {
                arrived.fetch_add(1);
                while (arrived.load() < THREADS) {
                    std::this_thread::yield();
                }
                for (int i = 0; i < PER_THREAD; ++i) {
                    store.write("many", std::to_string(t) + "-" + std::to_string(i), "1");
                }
            });
        }
        for (std::thread& w : writers) {
            w.join();
        }
        CHECK_NOTHROW(engine.settle());
        CHECK_EQ(count->load(), THREADS * PER_THREAD);
        CHECK_EQ(overlap->load(), 0);
        CHECK_EQ(counter.stats().missed, 0u);
    }
}

// ---------------------------------------------------------------------------------------
// Exceptions thrown by callbacks are contained and counted
// ---------------------------------------------------------------------------------------

static void test_exceptions_are_contained() {
    tarn::Engine engine = manual_engine();
    tarn::Store store = engine.store();
    auto c = std::make_shared<Collector>();
    tarn::Listener thrower = engine.bus().listen("ex", "*", [c](std::string_view json_text) {
        const std::string key = parse(json_text).str("key");
        if (key.rfind("throw-std", 0) == 0) {
            throw std::runtime_error("callback fails on " + key);
        }
        if (key == "throw-int") {
            throw 42;
        }
        c->push(json_text);
    });
    tarn::Listener bystander = engine.bus().subscribe("ex", "*");
    CHECK_EQ(thrower.exceptions(), 0u);

    for (const char* k : {"a", "throw-std-1", "b", "throw-int", "c", "throw-std-2", "d"}) {
        store.write("ex", k, "1");
    }
    CHECK_NOTHROW(engine.settle());
    CHECK_EQ(thrower.exceptions(), 3u);
    CHECK_EQ(wheres(c->events()), "ex/a,ex/b,ex/c,ex/d");
    const tarn_listener_stats st = thrower.stats();
    CHECK_EQ(st.delivered, 7u);
    CHECK_EQ(st.missed, 0u);
    CHECK_EQ(st.panics, 0u);  // nothing crossed into the library
    CHECK_EQ(drain(bystander).size(), 7u);

    // The listener keeps working, and so does the engine.
    store.write("ex", "e", "1");
    store.write("ex", "throw-std-3", "1");
    CHECK_NOTHROW(engine.settle());
    CHECK_EQ(wheres(c->events()), "ex/a,ex/b,ex/c,ex/d,ex/e");
    CHECK_EQ(thrower.exceptions(), 4u);
    CHECK_EQ(thrower.stats().delivered, 9u);

    // The count follows the Listener when it is moved.
    tarn::Listener moved(std::move(thrower));
    CHECK_EQ(moved.exceptions(), 4u);
    CHECK_EQ(thrower.exceptions(), 0u);
}

// ---------------------------------------------------------------------------------------
// RAII order
// ---------------------------------------------------------------------------------------

// A Listener destroyed (on another thread) while its callback runs waits for it, and
// deletes the std::function only afterwards.
static void test_destroy_waits_for_a_running_callback() {
    tarn::Engine engine = manual_engine();
    const tarn_engine* raw = engine.get();
    struct Shared {
        std::atomic<std::uint64_t> id{0};
        Flag entered;
        std::atomic<int> calls{0};
        std::atomic<bool> saw_free_begin{false};
        std::atomic<bool> destructor_was_waiting{false};
        std::atomic<bool> destructor_returned{false};
        std::string payload = std::string(100, 'p');  // touched after the free began
    };
    auto sh = std::make_shared<Shared>();
    std::optional<tarn::Listener> l;
    l.emplace(engine.bus().listen("w", "*", [sh, raw](std::string_view) {
        ++sh->calls;
        sh->entered.set();
        // Hold this callback until tarn_listener_free has begun on the destroying thread
        // (it releases the id first, so the id stops being known) — a spin on a library
        // call, not a sleep.
        const auto give_up = std::chrono::steady_clock::now() + LONG_WAIT;
        while (raw_listener_status(raw, sh->id.load()) == TARN_OK) {
            if (std::chrono::steady_clock::now() > give_up) {
                return;
            }
            std::this_thread::yield();
        }
        sh->saw_free_begin = true;
        // Captured state is still alive (ASan would report the closure as freed).
        sh->destructor_was_waiting = !sh->destructor_returned.load() && sh->payload.size() == 100;
    }));
    sh->id = l->id();
    const std::uint64_t id = l->id();
    CHECK_NOTHROW(engine.store().write("w", "k", "1"));
    CHECK(sh->entered.wait());

    std::thread destroyer([&] {
        l.reset();  // ~Listener: tarn_listener_free waits, then the std::function goes
        sh->destructor_returned = true;
    });
    destroyer.join();
    CHECK(sh->saw_free_begin.load());
    CHECK(sh->destructor_was_waiting.load());
    CHECK_EQ(sh->calls.load(), 1);
    CHECK_EQ(raw_listener_status(raw, id), TARN_NOT_FOUND);
    CHECK_EQ(sh.use_count(), 1);  // the std::function (and its copy of sh) is gone

    // Nothing is delivered after the destructor returned.
    CHECK_NOTHROW(engine.store().write("w", "k2", "2"));
    CHECK_NOTHROW(engine.settle());
    CHECK_EQ(sh->calls.load(), 1);
}

// A Listener destroyed from inside its own callback neither waits for itself nor deletes
// the std::function that is running: it goes right after the callback returns.
static void test_destroyed_from_its_own_callback() {
    tarn::Engine engine = manual_engine();
    const tarn_engine* raw = engine.get();
    struct Shared {
        std::mutex mu;
        std::optional<tarn::Listener> self;
        std::atomic<int> calls{0};
        std::atomic<int> touched_after{0};
        std::string payload = std::string(64, 's');
    };
    auto sh = std::make_shared<Shared>();
    std::weak_ptr<Shared> weak = sh;
    std::uint64_t id = 0;
    {
        std::lock_guard<std::mutex> lock(sh->mu);
        sh->self.emplace(engine.bus().listen("self", "*", [sh](std::string_view) {
            ++sh->calls;
            std::optional<tarn::Listener> mine;
            {
                std::lock_guard<std::mutex> lock(sh->mu);
                mine = std::move(sh->self);
                sh->self.reset();
            }
            mine.reset();  // ~Listener on its own callback's thread
            // Still inside the freed listener's std::function: its captures are alive.
            sh->touched_after += sh->payload.size() == 64 ? 1 : 0;
        }));
        id = sh->self->id();
    }
    CHECK_NOTHROW(engine.store().write("self", "a", "1"));
    CHECK_NOTHROW(engine.settle());
    CHECK_EQ(sh->calls.load(), 1);
    CHECK_EQ(sh->touched_after.load(), 1);
    CHECK_EQ(raw_listener_status(raw, id), TARN_NOT_FOUND);
    CHECK_NOTHROW(engine.store().write("self", "b", "1"));
    CHECK_NOTHROW(engine.settle());
    CHECK_EQ(sh->calls.load(), 1);
    sh.reset();
    CHECK(weak.expired());  // the std::function was deleted after its call returned
}

// Moving Listeners and Sessions.
static void test_moves() {
    tarn::Engine engine = manual_engine();
    const tarn_engine* raw = engine.get();
    tarn::Bus bus = engine.bus();
    tarn::Store store = engine.store();
    tarn::ListenOptions pv;
    pv.send_values = true;
    tarn::Listener presence = bus.subscribe("$sessions", "*", pv);

    // Listener: move construction keeps the callback running undisturbed.
    auto c = std::make_shared<Collector>();
    tarn::Listener a = bus.listen("m", "*", into(c));
    const std::uint64_t ida = a.id();
    tarn::Listener b(std::move(a));
    CHECK(!a);
    CHECK_EQ(a.id(), 0u);
    CHECK(!a.has_callback());
    CHECK(a.get() == nullptr);
    CHECK(static_cast<bool>(b));
    CHECK_EQ(b.id(), ida);
    CHECK(b.has_callback());
    CHECK_STATUS(TARN_NULL_ARGUMENT, a.stats());
    CHECK_STATUS(TARN_NULL_ARGUMENT, a.next());
    CHECK_STATUS(TARN_NULL_ARGUMENT, a.fd());
    CHECK_EQ(a.exceptions(), 0u);
    CHECK_NOTHROW(store.write("m", "1", "1"));
    CHECK_NOTHROW(engine.settle());
    CHECK_EQ(wheres(c->events()), "m/1");

    // Move assignment frees the target's listener first.
    tarn::Listener p = bus.subscribe("m", "*");
    const std::uint64_t idp = p.id();
    CHECK_NOTHROW(store.write("m", "2", "1"));  // one event waits on p
    p = std::move(b);
    CHECK_EQ(raw_listener_status(raw, idp), TARN_NOT_FOUND);
    CHECK(!b);
    CHECK_EQ(p.id(), ida);
    CHECK(p.has_callback());
    CHECK_NOTHROW(store.write("m", "3", "1"));
    CHECK_NOTHROW(engine.settle());
    CHECK_EQ(wheres(c->events()), "m/1,m/2,m/3");
    tarn::Listener& alias = p;
    p = std::move(alias);  // self-move keeps it
    CHECK_EQ(p.id(), ida);
    CHECK_EQ(raw_listener_status(raw, ida), TARN_OK);

    // Assigning into an empty Listener, and reset twice.
    a = std::move(p);
    CHECK_EQ(a.id(), ida);
    a.reset();
    CHECK(!a);
    a.reset();
    CHECK_EQ(raw_listener_status(raw, ida), TARN_NOT_FOUND);
    CHECK_NOTHROW(store.write("m", "4", "1"));
    CHECK_NOTHROW(engine.settle());
    CHECK_EQ(c->size(), 3u);

    // A vector of pull listeners survives reallocation.
    std::vector<tarn::Listener> many;
    for (int i = 0; i < 12; ++i) {
        many.push_back(bus.subscribe("vec", std::to_string(i)));
    }
    for (int i = 0; i < 12; ++i) {
        store.write("vec", std::to_string(i), std::to_string(i));
    }
    bool each_own = true;
    for (int i = 0; i < 12; ++i) {
        const std::vector<Event> got = drain(many[static_cast<std::size_t>(i)]);
        each_own = each_own && got.size() == 1 && got[0].str("key") == std::to_string(i);
    }
    CHECK(each_own);
    many.erase(many.begin(), many.begin() + 6);  // move-assigns the rest down
    CHECK_EQ(many.size(), 6u);
    CHECK_NOTHROW(store.write("vec", "6", "6"));
    CHECK_EQ(wheres(drain(many[0])), "vec/6");

    // Session: move construction.
    drain(presence);
    tarn::Session s = engine.open_session("mover");
    const std::uint64_t sid = s.id();
    CHECK(sid != 0);
    tarn::Session t(std::move(s));
    CHECK(!s);
    CHECK_EQ(s.id(), 0u);
    CHECK_EQ(t.id(), sid);
    CHECK(t.is_open());
    CHECK(t.get() == raw);
    CHECK_STATUS(TARN_NULL_ARGUMENT, s.is_open());
    CHECK_STATUS(TARN_NULL_ARGUMENT, s.keepalive());
    CHECK_STATUS(TARN_NULL_ARGUMENT, s.close());

    // Move assignment closes the target's session first.
    tarn::Session u = engine.open_session("replaced");
    const std::uint64_t uid = u.id();
    u = std::move(t);
    CHECK_EQ(raw_session_status(raw, uid), TARN_NOT_FOUND);
    CHECK_EQ(u.id(), sid);
    CHECK(u.is_open());
    CHECK(!t);
    tarn::Session& salias = u;
    u = std::move(salias);
    CHECK_EQ(u.id(), sid);
    CHECK(u.is_open());
    const std::vector<Event> seen = drain(presence);
    CHECK_EQ(kinds(seen), "session_open,session_open,session_close");
    CHECK(seen.size() == 3 && seen[2].num("session") == uid);

    // close(): the id stays readable, the session is released, a second close is a no-op.
    CHECK_NOTHROW(u.close());
    CHECK_EQ(u.id(), sid);
    CHECK(!u.is_open());
    CHECK_NOTHROW(u.close());
    CHECK_EQ(raw_session_status(raw, sid), TARN_NOT_FOUND);
    CHECK_STATUS(TARN_NOT_FOUND, u.keepalive());
    CHECK_EQ(kinds(drain(presence)), "session_close");
    {
        tarn::Session gone = std::move(u);  // destroyed: already closed, nothing happens
    }
    CHECK(drain(presence).empty());

    // A default-constructed Session and Listener are empty and harmless.
    tarn::Session empty_session;
    tarn::Listener empty_listener;
    CHECK(!empty_session && !empty_listener);
    CHECK_STATUS(TARN_NULL_ARGUMENT, empty_listener.stats());
}

// Listeners and Sessions that are never closed by hand, or that outlive their Engine,
// release everything (ASan's leak check at exit) and touch nothing freed.
static void test_lifetimes() {
    // Scope exit releases them, in reverse order of declaration.
    {
        tarn::Engine engine = manual_engine();
        const tarn_engine* raw = engine.get();
        std::uint64_t lid = 0;
        std::uint64_t sid = 0;
        tarn::Listener presence = engine.bus().subscribe("$sessions", "*");
        {
            tarn::Session s = engine.open_session("scoped");
            tarn::ListenOptions o;
            o.session = s.id();
            auto big = std::make_shared<std::vector<int>>(1000, 7);
            tarn::Listener l = engine.bus().listen("scoped", "*", [big](std::string_view) {
                (void)big->size();
            }, o);
            tarn::Listener pull = engine.bus().subscribe("scoped", "*", o);
            lid = l.id();
            sid = s.id();
            CHECK_NOTHROW(engine.store().write("scoped", "k", "1"));
            CHECK_NOTHROW(engine.settle());
        }
        CHECK_EQ(raw_listener_status(raw, lid), TARN_NOT_FOUND);
        CHECK_EQ(raw_session_status(raw, sid), TARN_NOT_FOUND);
        CHECK_EQ(kinds(drain(presence)), "session_open,session_close");
    }

    // Outliving the Engine: they are destroyed after it, and their calls throw
    // TARN_CLOSED instead of using the freed handle.
    auto c = std::make_shared<Collector>();
    tarn::Listener cb;
    tarn::Listener pull;
    tarn::Session s;
    tarn::Session leased;
    {
        tarn::Engine engine = manual_engine();
        s = engine.open_session("outlives");
        leased = engine.open_session("leased", 100ms);
        tarn::ListenOptions o;
        o.session = s.id();
        cb = engine.bus().listen("o", "*", into(c));
        pull = engine.bus().subscribe("o", "*", o);
        // The views follow the handle into another Engine object.
        tarn::Engine moved = std::move(engine);
        CHECK_NOTHROW(moved.store().write("o", "k", "1"));
        CHECK_NOTHROW(moved.settle());
        CHECK_EQ(c->size(), 1u);
        CHECK_EQ(drain(pull).size(), 1u);
        // `moved` frees the engine here, with all four still alive.
    }
    CHECK(static_cast<bool>(cb) && static_cast<bool>(pull) && static_cast<bool>(s));
    CHECK_STATUS(TARN_CLOSED, cb.stats());
    CHECK_STATUS(TARN_CLOSED, pull.next());
    CHECK_STATUS(TARN_CLOSED, pull.fd());
    CHECK_STATUS(TARN_CLOSED, s.is_open());
    CHECK_STATUS(TARN_CLOSED, s.keepalive());
    CHECK_STATUS(TARN_CLOSED, s.close());
    CHECK_EQ(cb.exceptions(), 0u);
    cb.reset();  // deletes only the std::function
    pull = tarn::Listener();
    s = tarn::Session();
    CHECK_EQ(c.use_count(), 1);
    // `leased` is destroyed at the end of this function, long after its engine.

    // After Engine::close (not yet freed) they can still be closed and destroyed.
    {
        tarn::Engine engine = manual_engine();
        tarn::Session live = engine.open_session("closing");
        auto c2 = std::make_shared<Collector>();
        tarn::Listener l = engine.bus().listen("z", "*", into(c2));
        tarn::Listener p = engine.bus().subscribe("z", "*");
        CHECK_NOTHROW(engine.close());
        // "Afterwards every call on it fails with TARN_CLOSED" (tarn_engine_close).
        CHECK_STATUS(TARN_CLOSED, p.next());
        CHECK_STATUS(TARN_CLOSED, live.is_open());
        CHECK_STATUS(TARN_CLOSED, live.keepalive());
        CHECK_STATUS(TARN_CLOSED, engine.bus().subscribe("z", "*"));
        CHECK_STATUS(TARN_CLOSED, engine.bus().listen("z", "*", into(c2)));
        CHECK_STATUS(TARN_CLOSED, engine.bus().signal("z", "k"));
        CHECK_STATUS(TARN_CLOSED, engine.open_session("late"));
        CHECK_NOTHROW(live.close());
        l.reset();
        CHECK_EQ(c2.use_count(), 1);
    }
}

// Listeners and sessions made and destroyed on several threads while writes go on: every
// destructor waits for its callback, so no callback ever sees its state torn down.
static void test_churn() {
    tarn::Engine engine = tarn::EngineBuilder().workers(4).manual_clock(T0).build();
    const tarn_engine* raw = engine.get();
    tarn::Store store = engine.store();
    tarn::Bus bus = engine.bus();
    std::atomic<bool> stop{false};
    std::atomic<int> failures{0};
    std::atomic<int> after_free{0};
    std::thread writer([&] {
        int i = 0;
        while (!stop.load()) {
            try {
                store.write("churn", "k" + std::to_string(i++ % 16), "1");
            } catch (...) {
                ++failures;
            }
        }
    });
    constexpr int THREADS = 3;
    constexpr int ROUNDS = 40;
    std::vector<std::vector<std::uint64_t>> ids(THREADS);
    std::vector<std::thread> makers;
    for (int t = 0; t < THREADS; ++t) {
        makers.emplace_back([&, t] {
            try {
                for (int round = 0; round < ROUNDS; ++round) {
                    auto alive = std::make_shared<std::atomic<bool>>(true);
                    tarn::Session s = engine.open_session("churn-" + std::to_string(t));
                    tarn::ListenOptions o;
                    o.session = round % 3 == 0 ? s.id() : 0;
                    tarn::Listener l = bus.listen(
                        "churn", round % 2 == 0 ? "*" : "k1",
                        [alive, &after_free](std::string_view) {
                            if (!alive->load()) {
                                ++after_free;
                            }
                        },
                        o);
                    tarn::Listener p = bus.subscribe("*", "*");
                    (void)p.next();
                    ids[static_cast<std::size_t>(t)].push_back(l.id());
                    if (round % 2 == 0) {
                        s.close();  // its listener (round % 3 == 0) stops with it
                    }
                    l.reset();
                    alive->store(false);
                }
            } catch (const std::exception& e) {
                std::lock_guard<std::mutex> lock(g_print);
                std::fprintf(stderr, "churn thread %d: %s\n", t, e.what());
                ++failures;
            }
        });
    }
    for (std::thread& m : makers) {
        m.join();
    }
    stop = true;
    writer.join();
    CHECK_NOTHROW(engine.settle());
    CHECK_EQ(failures.load(), 0);
    CHECK_EQ(after_free.load(), 0);
    bool all_freed = true;
    for (const auto& list : ids) {
        all_freed = all_freed && list.size() == static_cast<std::size_t>(ROUNDS);
        for (std::uint64_t id : list) {
            all_freed = all_freed && raw_listener_status(raw, id) == TARN_NOT_FOUND;
        }
    }
    CHECK(all_freed);
}

// ---------------------------------------------------------------------------------------
// Sessions: owned keys, presence, leases
// ---------------------------------------------------------------------------------------

static tarn::WriteOptions owned_by(const tarn::Session& s) {
    tarn::WriteOptions o;
    o.expire_session = true;
    o.session = s.id();
    return o;
}

static void test_session_close_removes_its_keys() {
    tarn::Engine engine = manual_engine();
    const tarn_engine* raw = engine.get();
    tarn::Store store = engine.store();
    tarn::Bus bus = engine.bus();
    tarn::Listener watch = bus.subscribe("s", "*");
    tarn::ListenOptions pv;
    pv.send_values = true;
    tarn::Listener presence = bus.subscribe("$sessions", "*", pv);

    tarn::Session a = engine.open_session("alice");
    tarn::Session b = engine.open_session("bob");
    CHECK(a.id() != 0 && b.id() != 0 && a.id() != b.id());
    CHECK(a.is_open() && b.is_open());
    const tarn::WriteOptions as_a = owned_by(a);
    const tarn::WriteOptions as_b = owned_by(b);
    tarn::WriteOptions plain_a;
    plain_a.session = a.id();
    CHECK_NOTHROW(store.write("s", "a1", "1", as_a));
    CHECK_NOTHROW(store.write("s", "a2", "1", as_a));
    CHECK_NOTHROW(store.write("s", "moved", "1", as_a));
    CHECK_NOTHROW(store.write("s", "moved", "2", as_b));  // now bob's
    CHECK_NOTHROW(store.write("s", "kept", "1", as_a));
    CHECK_NOTHROW(store.write("s", "kept", "2"));  // permanent again
    CHECK_NOTHROW(store.write("s", "plain", "1", plain_a));  // by alice, not owned
    tarn::ListenOptions oa;
    oa.session = a.id();
    tarn::Listener a_pull = bus.subscribe("s", "*", oa);
    auto a_seen = std::make_shared<Collector>();
    tarn::Listener a_cb = bus.listen("s", "*", into(a_seen), oa);
    const std::vector<Event> writes = drain(watch);
    CHECK_EQ(writes.size(), 7u);
    CHECK(writes.size() == 7 && writes[0].num("session") == a.id() && writes[3].num("session") == b.id());

    const std::uint64_t before = store.last_version();
    CHECK_NOTHROW(a.close());
    CHECK(!a.is_open());
    CHECK_NOTHROW(a.close());
    std::vector<Event> removed = drain(watch);
    std::sort(removed.begin(), removed.end(),
              [](const Event& x, const Event& y) { return x.str("key") < y.str("key"); });
    CHECK_EQ(wheres(removed), "s/a1,s/a2");
    CHECK_EQ(kinds(removed), "session_expire,session_expire");
    CHECK(all_parse(removed));
    CHECK(std::all_of(removed.begin(), removed.end(), [&](const Event& e) {
        return e.num("session") == a.id() && e.num("version") > before && e.is_null("value");
    }));
    CHECK_EQ(store.list("s"), R"(["kept","moved","plain"])"sv);
    CHECK_STATUS(TARN_CLOSED, a_pull.next());  // its listeners closed with it
    CHECK_NOTHROW(engine.settle());
    CHECK_EQ(a_seen->size(), 0u);
    CHECK_STATUS(TARN_NOT_FOUND, store.write("s", "x", "1", as_a));
    CHECK_STATUS(TARN_NOT_FOUND, a.keepalive());
    CHECK_EQ(raw_session_status(raw, a.id()), TARN_NOT_FOUND);
    CHECK_STATUS(TARN_NOT_FOUND, bus.subscribe("s", "*", oa));  // the id is released

    // Bob's Session destructor closes him: his key goes.
    const std::uint64_t bob = b.id();
    { tarn::Session gone = std::move(b); }
    CHECK(!store.try_read("s", "moved").has_value());
    const std::vector<Event> bobs = drain(watch);
    CHECK_EQ(wheres(bobs), "s/moved");
    CHECK(bobs.size() == 1 && bobs[0].kind() == "session_expire" && bobs[0].num("session") == bob);
    CHECK_EQ(store.list("s"), R"(["kept","plain"])"sv);

    // Presence: open, open, close, close on "$sessions", key = the id, value
    // {"session":id,"client_id":...}.
    const std::vector<Event> p = drain(presence);
    CHECK_EQ(kinds(p), "session_open,session_open,session_close,session_close");
    CHECK(all_parse(p));
    const std::uint64_t ids[] = {a.id(), bob, a.id(), bob};
    const char* clients[] = {"alice", "bob", "alice", "bob"};
    for (std::size_t i = 0; i < p.size() && i < 4; ++i) {
        const Event& e = p[i];
        const std::optional<json::Members> v = json::members(e.at("value"));
        std::string client;
        std::string session;
        for (const auto& kv : v.value_or(json::Members{})) {
            (kv.first == "client_id" ? client : session) = kv.second;
        }
        record(e.str("bucket") == "$sessions" && e.str("key") == std::to_string(ids[i]) &&
                   e.num("session") == ids[i] && e.num("version") == 0 &&
                   json::unquote(client) == clients[i] && session == std::to_string(ids[i]),
               __FILE__, __LINE__, "presence event " + e.raw);
    }

    // Writing as a session needs an open one; expire_session needs a session.
    tarn::WriteOptions orphan;
    orphan.expire_session = true;
    CHECK_STATUS(TARN_INVALID_ARGUMENT, store.write("s", "o", "1", orphan));
    orphan.session = 12345;
    CHECK_STATUS(TARN_NOT_FOUND, store.write("s", "o", "1", orphan));
    CHECK(!store.try_read("s", "o").has_value());
}

static void test_lease_on_the_manual_clock() {
    tarn::Engine engine = manual_engine();
    tarn::Store store = engine.store();
    tarn::Clock clock = engine.clock();
    tarn::Listener watch = engine.bus().subscribe("l", "*");
    tarn::Listener presence = engine.bus().subscribe("$sessions", "*");

    tarn::Session s = engine.open_session("leased", 1000ms);
    CHECK_NOTHROW(store.write("l", "k", "1", owned_by(s)));
    CHECK_NOTHROW(clock.advance(999ms));
    CHECK_NOTHROW(engine.settle());
    CHECK(s.is_open());
    CHECK_NOTHROW(s.keepalive());  // another 1000 ms from T0 + 999
    CHECK_NOTHROW(clock.advance(999ms));
    CHECK_NOTHROW(engine.settle());
    CHECK(s.is_open());
    CHECK(store.try_read("l", "k").has_value());
    CHECK_NOTHROW(clock.advance(1ms));  // T0 + 1999: the lease ran out
    CHECK_NOTHROW(engine.settle());
    CHECK(!s.is_open());
    CHECK(!store.try_read("l", "k").has_value());
    CHECK_STATUS(TARN_CLOSED, s.keepalive());

    const std::vector<Event> w = drain(watch);
    CHECK_EQ(kinds(w), "write,session_expire");
    CHECK(w.size() == 2 && w[1].num("session") == s.id() && w[1].num("timestamp_ms") == T0 + 1999);
    const std::vector<Event> p = drain(presence);
    CHECK_EQ(kinds(p), "session_open,session_close");
    CHECK(p.size() == 2 && p[1].num("timestamp_ms") == T0 + 1999 && p[1].num("session") == s.id());

    // Without a lease a session never runs out.
    tarn::Session forever = engine.open_session("forever");
    CHECK_NOTHROW(clock.advance(std::chrono::hours(24)));
    CHECK_NOTHROW(engine.settle());
    CHECK(forever.is_open());
    CHECK_NOTHROW(forever.keepalive());

    // Closing a session its lease closed releases the id without a second event.
    CHECK_NOTHROW(s.close());
    CHECK(!s.is_open());
    CHECK_EQ(kinds(drain(presence)), "session_open");

    // Bad session arguments.
    CHECK_STATUS(TARN_INVALID_ARGUMENT, engine.open_session("negative", -1ms));
    CHECK_STATUS(TARN_INVALID_ARGUMENT, engine.open_session(""));
    CHECK_STATUS(TARN_INVALID_ARGUMENT, engine.open_session("tab\there"));
    CHECK_STATUS(TARN_INVALID_ARGUMENT, engine.open_session(std::string_view("a\0b", 3)));
    CHECK_STATUS(TARN_INVALID_ARGUMENT,
                 engine.open_session(std::string(TARN_MAX_CLIENT_ID_BYTES + 1, 'c')));
    tarn::Session longest = engine.open_session(std::string(TARN_MAX_CLIENT_ID_BYTES, 'c'));
    CHECK(longest.is_open());
    CHECK_EQ(kinds(drain(presence)), "session_open");
}

// ---------------------------------------------------------------------------------------
// Bound policies: Drop (exact counts) and Block
// ---------------------------------------------------------------------------------------

static void test_drop_policy_counts() {
    tarn::Engine engine = manual_engine();
    tarn::Store store = engine.store();

    // Pull: capacity 2, five writes: two kept, three missed; the next accepted event
    // says "missed":3.
    tarn::ListenOptions two;
    two.capacity = 2;
    tarn::Listener l = engine.bus().subscribe("d", "*", two);
    for (int i = 0; i < 5; ++i) {
        store.write("d", "k" + std::to_string(i), std::to_string(i));
    }
    const std::vector<Event> first = drain(l);
    CHECK_EQ(wheres(first), "d/k0,d/k1");
    CHECK(std::all_of(first.begin(), first.end(), [](const Event& e) { return e.num("missed") == 0; }));
    tarn_listener_stats st = l.stats();
    CHECK_EQ(st.missed, 3u);
    CHECK_EQ(st.delivered, 2u);
    store.write("d", "k5", "5");
    store.write("d", "k6", "6");
    const std::vector<Event> next = drain(l);
    CHECK_EQ(wheres(next), "d/k5,d/k6");
    CHECK(next.size() == 2 && next[0].num("missed") == 3 && next[1].num("missed") == 0);
    st = l.stats();
    CHECK_EQ(st.missed, 3u);
    CHECK_EQ(st.delivered, 4u);

    // Callback: the first event is held in the callback, so exactly two more fit.
    struct Gate {
        Flag entered;
        Flag release;
        std::atomic<int> calls{0};
    };
    auto gate = std::make_shared<Gate>();
    auto c = std::make_shared<Collector>();
    tarn::Listener cb = engine.bus().listen("dc", "*", [gate, c](std::string_view e) {
        if (gate->calls.fetch_add(1) == 0) {
            gate->entered.set();
            gate->release.wait();
        }
        c->push(e);
    }, two);
    store.write("dc", "e0", "0");
    CHECK(gate->entered.wait());
    for (int i = 1; i <= 5; ++i) {
        store.write("dc", "e" + std::to_string(i), "1");
    }
    CHECK_EQ(cb.stats().missed, 3u);
    gate->release.set();
    CHECK_NOTHROW(engine.settle());
    CHECK_EQ(wheres(c->events()), "dc/e0,dc/e1,dc/e2");
    store.write("dc", "e6", "1");
    CHECK_NOTHROW(engine.settle());
    const std::vector<Event> got = c->events();
    CHECK_EQ(wheres(got), "dc/e0,dc/e1,dc/e2,dc/e6");
    CHECK(got.size() == 4 && got[0].num("missed") == 0 && got[1].num("missed") == 0 &&
          got[2].num("missed") == 0 && got[3].num("missed") == 3);
    st = cb.stats();
    CHECK_EQ(st.delivered, 4u);
    CHECK_EQ(st.missed, 3u);
}

static void test_block_policy() {
    tarn::Engine engine = manual_engine();
    tarn::Store store = engine.store();
    tarn::ListenOptions blocking;
    blocking.capacity = 1;
    blocking.block = true;
    blocking.block_timeout = LONG_WAIT;
    tarn::Listener l = engine.bus().subscribe("blk", "*", blocking);

    // With capacity 1, write i can only complete once events 0..i-1 were taken, so
    // "delivered" (counted as an event is taken) is at least i when it returns.
    constexpr int N = 4;
    std::atomic<int> early{0};
    std::atomic<int> errors{0};
    std::thread writer([&] {
        for (int i = 0; i < N; ++i) {
            try {
                store.write("blk", "k" + std::to_string(i), "1");
                if (l.stats().delivered < static_cast<std::uint64_t>(i)) {
                    ++early;
                }
            } catch (...) {
                ++errors;
            }
        }
    });
    std::vector<Event> got;
    for (int i = 0; i < N; ++i) {
        if (std::optional<std::string> e = l.next(LONG_WAIT)) {
            got.push_back(parse(*e));
        }
    }
    writer.join();
    CHECK_EQ(wheres(got), "blk/k0,blk/k1,blk/k2,blk/k3");
    CHECK_EQ(early.load(), 0);
    CHECK_EQ(errors.load(), 0);
    CHECK_EQ(l.stats().missed, 0u);
    CHECK_EQ(l.stats().delivered, static_cast<std::uint64_t>(N));

    // A callback publishing into a full blocking queue (on an engine thread) does not
    // wait for itself: it drops and counts.
    tarn::Listener full = engine.bus().subscribe("blk2", "*", blocking);
    auto done = std::make_shared<std::atomic<int>>(0);
    tarn::Listener relay = engine.bus().listen("trigger", "*", [store, done](std::string_view) {
        store.write("blk2", "a", "1");
        store.write("blk2", "b", "1");  // the queue holds one: dropped, not blocked
        ++*done;
    });
    store.write("trigger", "go", "1");
    CHECK_NOTHROW(engine.settle());
    CHECK_EQ(done->load(), 1);
    CHECK_EQ(full.stats().missed, 1u);
    CHECK_EQ(wheres(drain(full)), "blk2/a");

    CHECK_STATUS(TARN_INVALID_ARGUMENT, [&] {
        tarn::ListenOptions bad;
        bad.block = true;
        bad.block_timeout = -1ms;
        return engine.bus().subscribe("blk", "*", bad);
    }());
}

// ---------------------------------------------------------------------------------------
// Watching from a version; TARN_TOO_OLD
// ---------------------------------------------------------------------------------------

static void test_watch_from_a_version() {
    tarn::Engine engine =
        tarn::EngineBuilder().workers(2).manual_clock(T0).change_log_capacity(4).build();
    tarn::Store store = engine.store();
    std::vector<std::uint64_t> v;
    for (int i = 0; i < 6; ++i) {
        v.push_back(store.write("w", "k" + std::to_string(i), std::to_string(i)));
    }
    // The log keeps the last 4 changes (k2..k5): starting after k1 is fine.
    tarn::ListenOptions from1;
    from1.from_version = v[1];
    from1.send_values = true;
    tarn::Listener l = engine.bus().subscribe("w", "*", from1);
    const std::uint64_t live = store.write("w", "live", "true");
    const std::vector<Event> got = drain(l);
    CHECK_EQ(wheres(got), "w/k2,w/k3,w/k4,w/k5,w/live");
    CHECK(got.size() == 5 && got[0].num("version") == v[2] && got[3].num("version") == v[5] &&
          got[4].num("version") == live);
    CHECK(got.size() == 5 && got[0].at("value") == "2");

    // A callback listener gets the replay too (it may start before listen() returns).
    auto c = std::make_shared<Collector>();
    tarn::ListenOptions from3;
    from3.from_version = v[3];
    tarn::Listener cb = engine.bus().listen("w", "*", into(c), from3);
    CHECK_NOTHROW(engine.settle());
    CHECK_EQ(wheres(c->events()), "w/k4,w/k5,w/live");

    // Replays respect the pattern.
    tarn::ListenOptions from2;
    from2.from_version = v[2];
    tarn::Listener one = engine.bus().subscribe("w", "k5", from2);
    CHECK_EQ(wheres(drain(one)), "w/k5");

    // Older than the log keeps: TARN_TOO_OLD as a tarn::Error, for both kinds.
    tarn::ListenOptions from0;
    from0.from_version = v[0];
    try {
        tarn::Listener never = engine.bus().subscribe("w", "*", from0);
        CHECK(false);
    } catch (const tarn::Error& e) {
        CHECK_EQ(e.status(), TARN_TOO_OLD);
        CHECK_EQ(e.status_name(), "TARN_TOO_OLD"sv);
        CHECK(contains(e.what(), "TARN_TOO_OLD: "));
        CHECK(contains(e.detail(), "too old"));
    }
    auto unused = std::make_shared<Collector>();
    CHECK_STATUS(TARN_TOO_OLD, engine.bus().listen("w", "*", into(unused), from0));
    CHECK_EQ(unused.use_count(), 1);  // the refused std::function was released

    // A log of 0 keeps nothing: only "from now" works.
    tarn::Engine bare =
        tarn::EngineBuilder().workers(1).manual_clock(T0).change_log_capacity(0).build();
    const std::uint64_t b1 = bare.store().write("w", "a", "1");
    bare.store().write("w", "b", "1");
    tarn::ListenOptions old;
    old.from_version = b1;
    CHECK_STATUS(TARN_TOO_OLD, bare.bus().subscribe("w", "*", old));
    tarn::ListenOptions now;
    now.from_version = bare.store().last_version();
    tarn::Listener fresh = bare.bus().subscribe("w", "*", now);
    CHECK(!fresh.next().has_value());
    bare.store().write("w", "c", "1");
    CHECK_EQ(wheres(drain(fresh)), "w/c");
}

// ---------------------------------------------------------------------------------------
// The fd, pull with a timeout, and refused arguments
// ---------------------------------------------------------------------------------------

static bool readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;  // no wait
}

static void test_fd_and_pull() {
    tarn::Engine engine = manual_engine();
    tarn::Store store = engine.store();
    tarn::Listener l = engine.bus().subscribe("fd", "*");
    const int fd = l.fd();
    CHECK(fd >= 0);
    CHECK_EQ(l.fd(), fd);
    CHECK(!readable(fd));
    store.write("fd", "a", "1");
    store.write("fd", "b", "1");
    CHECK(readable(fd));
    CHECK(l.next().has_value());
    CHECK(readable(fd));  // one still waits
    CHECK(l.next().has_value());
    CHECK(!readable(fd));
    CHECK(!l.next().has_value());

    // next() with a timeout is woken by a write from another thread.
    Flag go;
    std::thread writer([&] {
        go.wait();
        store.write("fd", "c", "1");
    });
    go.set();
    const std::optional<std::string> woken = l.next(LONG_WAIT);
    writer.join();
    CHECK(woken.has_value() && parse(*woken).str("key") == "c");
    CHECK_STATUS(TARN_INVALID_ARGUMENT, l.next(-1ms));

    // When its session closes, the fd turns readable (an event loop wakes up) and next()
    // says TARN_CLOSED; the fd stays the listener's until it is freed.
    tarn::Session s = engine.open_session("poller");
    tarn::ListenOptions o;
    o.session = s.id();
    tarn::Listener owned = engine.bus().subscribe("fd", "*", o);
    const int ofd = owned.fd();
    CHECK(!readable(ofd));
    CHECK_NOTHROW(s.close());
    CHECK(readable(ofd));
    CHECK_STATUS(TARN_CLOSED, owned.next());
    CHECK_EQ(owned.fd(), ofd);
}

static void test_refused_arguments() {
    tarn::Engine engine = manual_engine();
    tarn::Bus bus = engine.bus();
    auto c = std::make_shared<Collector>();
    for (std::string_view b : {""sv, "b."sv, "$other"sv, " x"sv}) {
        CHECK_STATUS(TARN_INVALID_ARGUMENT, bus.subscribe(b, "*"));
        CHECK_STATUS(TARN_INVALID_ARGUMENT, bus.listen(b, "*", into(c)));
    }
    CHECK_STATUS(TARN_INVALID_ARGUMENT, bus.subscribe("b", ""));
    CHECK_STATUS(TARN_INVALID_ARGUMENT, bus.subscribe(std::string_view("b\0c", 3), "*"));
    CHECK_STATUS(TARN_INVALID_ARGUMENT, bus.listen("b", std::string_view("k\0", 2), into(c)));
    CHECK_STATUS(TARN_INVALID_UTF8, bus.subscribe("\xff", "*"));
    CHECK_STATUS(TARN_NULL_ARGUMENT, bus.listen("b", "*", std::function<void(std::string_view)>()));
    tarn::ListenOptions unknown;
    unknown.session = 999;
    CHECK_STATUS(TARN_NOT_FOUND, bus.subscribe("b", "*", unknown));
    CHECK_STATUS(TARN_NOT_FOUND, bus.listen("b", "*", into(c), unknown));
    CHECK_EQ(c.use_count(), 1);  // no refused listener kept its std::function

    // "$sessions" is listenable (presence), not writable.
    tarn::Listener presence = bus.subscribe("$sessions", "*");
    CHECK_STATUS(TARN_INVALID_ARGUMENT, engine.store().write("$sessions", "1", "{}"));

    // A raw Bus view works like Engine::bus() (its listeners must not outlive the engine).
    tarn::Bus raw_view(engine.get());
    tarn::Listener via_raw = raw_view.subscribe("raw", "*");
    engine.store().write("raw", "k", "1");
    CHECK_EQ(wheres(drain(via_raw)), "raw/k");
    via_raw.reset();  // before the engine goes: a raw view cannot tell when it is freed

    // Moved-from engines throw TARN_NULL_ARGUMENT here too.
    tarn::Engine gone = std::move(engine);
    CHECK_STATUS(TARN_NULL_ARGUMENT, engine.bus().subscribe("b", "*"));
    CHECK_STATUS(TARN_NULL_ARGUMENT, engine.bus().signal("b", "k"));
    CHECK_STATUS(TARN_NULL_ARGUMENT, engine.open_session("x"));
    CHECK_EQ(wheres(drain(presence)), "");
}

int main() {
    const std::pair<const char*, void (*)()> tests[] = {
        {"events_and_values", test_events_and_values},
        {"wildcard_matrix", test_wildcard_matrix},
        {"signals", test_signals},
        {"callbacks_call_the_engine", test_callbacks_call_the_engine},
        {"exceptions_are_contained", test_exceptions_are_contained},
        {"destroy_waits_for_a_running_callback", test_destroy_waits_for_a_running_callback},
        {"destroyed_from_its_own_callback", test_destroyed_from_its_own_callback},
        {"moves", test_moves},
        {"lifetimes", test_lifetimes},
        {"churn", test_churn},
        {"session_close_removes_its_keys", test_session_close_removes_its_keys},
        {"lease_on_the_manual_clock", test_lease_on_the_manual_clock},
        {"drop_policy_counts", test_drop_policy_counts},
        {"block_policy", test_block_policy},
        {"watch_from_a_version", test_watch_from_a_version},
        {"fd_and_pull", test_fd_and_pull},
        {"refused_arguments", test_refused_arguments},
    };
    for (const auto& t : tests) {
        try {
            t.second();
        } catch (const std::exception& e) {
            record(false, __FILE__, __LINE__, std::string(t.first) + ": uncaught " + e.what());
        }
    }
    std::printf("test_bus.cpp: %d passed, %d failed\n", g_passed.load(), g_failed.load());
    // Flush now: the leak checker runs at exit and, on a leak, ends the process before
    // stdio would flush a piped stdout.
    std::fflush(stdout);
    return g_failed.load() == 0 ? 0 : 1;
}
