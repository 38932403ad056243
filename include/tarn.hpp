/*
 * tarn.hpp: a header-only C++17 RAII layer over tarn.h, the C ABI of tarn.
 *
 * Written by hand (tarn.h is generated). Every C function of tarn.h is reached through
 * one of the classes or free functions below; nothing here adds behaviour the C ABI
 * does not have, except checks and guarantees C cannot give:
 * - a name (bucket, key, client id, request id) given as std::string_view or
 *   std::string is copied into / passed as a NUL-terminated string, and one containing
 *   '\0' throws tarn::Error with TARN_INVALID_ARGUMENT (C would silently cut it at the
 *   NUL);
 * - a TTL, lease, settle/next/block timeout or clock advance that is negative, and a
 *   TTL of zero (which the C struct would read as "never expire"), throw
 *   TARN_INVALID_ARGUMENT;
 * - an empty std::string_view of JSON is passed as a valid zero-length range, so the
 *   library reports TARN_INVALID_JSON / TARN_INVALID_PATCH instead of a NULL argument;
 * - an event callback is a std::function; a C++ exception it throws never crosses into
 *   the C library: the wrapper catches it, counts it (Listener::exceptions()) and the
 *   listener goes on with the next event; an empty std::function throws
 *   TARN_NULL_ARGUMENT;
 * - a Listener or Session made through an Engine (Engine::bus, Engine::open_session)
 *   that outlives it is still safe to destroy: it then releases only its own C++ state
 *   (the engine released the rest), and its other calls throw TARN_CLOSED instead of
 *   touching freed memory.
 *
 * Errors: every failing call throws tarn::Error, which carries the tarn_status, its
 * name and the tarn_last_error() message captured on the calling thread right after
 * the failing call. The only non-throwing paths are Store::try_read (TARN_NOT_FOUND
 * gives std::nullopt), Listener::next (TARN_TIMEOUT gives std::nullopt), and
 * destructors (and the reset() functions that do what a destructor does).
 *
 * Threads: Engine, Store, Clock and Bus may be used from many threads at the same time
 * (tarn_engine is thread-safe until it is freed); so may the const functions of a
 * Listener or Session. Moving, assigning or destroying an Engine, Listener or Session
 * must not race with any other use of that object. Buffer and EngineBuilder are plain
 * values: use each from one thread at a time. Event callbacks run on the engine's
 * worker threads, never on the thread that registered them (see Bus::listen).
 */

#ifndef TARN_HPP
#define TARN_HPP

#include "tarn.h"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

// This wrapper was written against version 2 of the C ABI (change metadata in the
// option structs, sessions, the event bus); a header with another ABI version needs the
// wrapper reviewed, so refuse to compile rather than guess.
static_assert(TARN_ABI_VERSION == 2, "tarn.hpp was written for TARN_ABI_VERSION 2");

namespace tarn {

// ---------------------------------------------------------------------------------------
// Library identity
// ---------------------------------------------------------------------------------------

/// The ABI version of the header this program was compiled with (TARN_ABI_VERSION).
inline constexpr std::uint32_t header_abi_version = TARN_ABI_VERSION;

/// The library version ("0.1.0"). The view points at a static string of the library:
/// valid for the life of the program. Any thread.
inline std::string_view version() noexcept { return std::string_view(tarn_version()); }

/// The C ABI version of the loaded library (tarn_abi_version). Any thread.
inline std::uint32_t abi_version() noexcept { return tarn_abi_version(); }

/// Whether the loaded library speaks the ABI of the header this program was built
/// with. Any thread.
inline bool abi_compatible() noexcept { return tarn_abi_version() == TARN_ABI_VERSION; }

/// The name of a status ("TARN_NOT_FOUND"; "TARN_UNKNOWN_STATUS" for other values).
/// The view points at a static string of the library. Any thread.
inline std::string_view status_name(tarn_status status) noexcept {
    return std::string_view(tarn_status_name(static_cast<std::int32_t>(status)));
}

/// A copy of the message of the most recent failing tarn call on this thread ("" if
/// none). Copied because the library's string is replaced by the next failure.
inline std::string last_error() { return std::string(tarn_last_error()); }

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// A failed tarn call: its status, and a message. what() is
/// "<status name>: <message>"; detail() is the message alone.
///
/// Ownership: a plain value (copies its strings). Thread-safety: like std::string.
class Error : public std::runtime_error {
public:
    /// An error with the given status and message.
    Error(tarn_status status, const std::string& message)
        : std::runtime_error(compose(status, message)), status_(status), detail_(message) {}

    /// The error for `status` with the calling thread's tarn_last_error() as message.
    /// Call it right after the failing C call, before any other tarn call.
    static Error from_last(tarn_status status) { return Error(status, last_error()); }

    /// The status of the failed call (never TARN_OK).
    tarn_status status() const noexcept { return status_; }

    /// The status name, such as "TARN_NOT_FOUND" (a static string of the library).
    std::string_view status_name() const noexcept { return tarn::status_name(status_); }

    /// The message alone, without the status name.
    const std::string& detail() const noexcept { return detail_; }

private:
    static std::string compose(tarn_status status, const std::string& message) {
        std::string s(tarn::status_name(status));
        if (!message.empty()) {
            s += ": ";
            s += message;
        }
        return s;
    }

    tarn_status status_;
    std::string detail_;
};

/// Throws tarn::Error for any status but TARN_OK, with the message tarn_last_error()
/// holds for the calling thread. Call it on the result of a C call, immediately.
inline void check(tarn_status status) {
    if (status != TARN_OK) {
        throw Error::from_last(status);
    }
}

/// Throws tarn::Error with TARN_NOT_SUPPORTED unless the loaded library has the ABI
/// version of this header. Call it once at start-up.
inline void check_abi_version() {
    if (!abi_compatible()) {
        throw Error(TARN_NOT_SUPPORTED,
                    "libtarn has C ABI version " + std::to_string(tarn_abi_version()) +
                        " but tarn.h is version " + std::to_string(TARN_ABI_VERSION));
    }
}

namespace detail {

/// A name argument as a NUL-terminated copy; throws TARN_INVALID_ARGUMENT when the
/// name contains '\0' (C would read only the part before it).
inline std::string c_name(std::string_view name, const char* what) {
    if (name.find('\0') != std::string_view::npos) {
        throw Error(TARN_INVALID_ARGUMENT,
                    std::string(what) + " contains a NUL byte (names are NUL-terminated)");
    }
    return std::string(name);
}

/// A JSON text argument as pointer + length. An empty view may have a NULL data();
/// the library refuses NULL, so an empty text points at a static empty string.
inline const std::uint8_t* c_bytes(std::string_view text) noexcept {
    static const char empty[1] = {'\0'};
    return reinterpret_cast<const std::uint8_t*>(text.data() != nullptr ? text.data() : empty);
}

/// A non-negative duration in whole milliseconds; throws TARN_INVALID_ARGUMENT when
/// negative.
inline std::uint64_t c_ms(std::chrono::milliseconds d, const char* what) {
    if (d.count() < 0) {
        throw Error(TARN_INVALID_ARGUMENT, std::string(what) + " is negative");
    }
    return static_cast<std::uint64_t>(d.count());
}

/// A std::string argument the library reads as NUL-terminated (a request id): its own
/// c_str(), after refusing an embedded '\0' with TARN_INVALID_ARGUMENT.
inline const char* c_str_checked(const std::string& text, const char* what) {
    if (text.find('\0') != std::string::npos) {
        throw Error(TARN_INVALID_ARGUMENT,
                    std::string(what) + " contains a NUL byte (it is NUL-terminated in C)");
    }
    return text.c_str();
}

/// The C change metadata for a session id, request id and user data (JSON text). The
/// result borrows the strings: it is valid while they live, unchanged.
inline tarn_change_meta c_meta(std::uint64_t session, const std::optional<std::string>& request_id,
                               const std::optional<std::string>& user_data) {
    tarn_change_meta m{session, nullptr, nullptr, 0};
    if (request_id) {
        m.request_id = c_str_checked(*request_id, "the request id");
    }
    if (user_data) {
        // An empty text is passed as a valid empty range: the library says
        // TARN_INVALID_JSON rather than taking it for "no user data".
        m.user_data = c_bytes(*user_data);
        m.user_data_len = user_data->size();
    }
    return m;
}

/// Shared by an Engine and the Listeners and Sessions made through it (through its
/// Bus): set once the Engine has freed its tarn_engine, so that a Listener or Session
/// that outlives it neither calls into freed memory nor leaks its own C++ state.
struct EngineLife {
    std::atomic<bool> freed{false};
};

/// Whether the engine behind `life` was freed by its Engine (no life: never known to
/// be freed, as for a raw handle).
inline bool engine_freed(const std::shared_ptr<EngineLife>& life) noexcept {
    return life != nullptr && life->freed.load(std::memory_order_acquire);
}

}  // namespace detail

// ---------------------------------------------------------------------------------------
// Buffer
// ---------------------------------------------------------------------------------------

/// Bytes returned by the library (JSON text, UTF-8, not NUL-terminated).
///
/// Ownership: owns one tarn_buf and releases it with tarn_buf_free when destroyed,
/// reset or assigned over. Move-only; a moved-from Buffer is empty. The bytes of a
/// document read are shared with the store (not copied) and stay valid and unchanged
/// until the Buffer releases them, whatever happens to the document meanwhile.
/// Thread-safety: not shared; use one Buffer from one thread at a time (it may be
/// moved to, and freed on, another thread).
class Buffer {
public:
    /// An empty buffer.
    Buffer() noexcept : buf_{nullptr, 0, nullptr} {}

    /// Takes ownership of a tarn_buf the library filled in.
    explicit Buffer(tarn_buf raw) noexcept : buf_(raw) {}

    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;

    /// Takes `other`'s bytes; `other` becomes empty.
    Buffer(Buffer&& other) noexcept : buf_(other.buf_) { other.zero(); }

    /// Releases this buffer's bytes and takes `other`'s; `other` becomes empty.
    Buffer& operator=(Buffer&& other) noexcept {
        if (this != &other) {
            tarn_buf_free(&buf_);
            buf_ = other.buf_;
            other.zero();
        }
        return *this;
    }

    /// Releases the bytes (tarn_buf_free).
    ~Buffer() { tarn_buf_free(&buf_); }

    /// Releases the bytes now; the buffer becomes empty.
    void reset() noexcept { tarn_buf_free(&buf_); }

    /// Releases the current bytes and returns the tarn_buf for a C call to fill in.
    tarn_buf* out() noexcept {
        tarn_buf_free(&buf_);
        return &buf_;
    }

    /// Gives up ownership: the caller must tarn_buf_free the result.
    tarn_buf release() noexcept {
        tarn_buf r = buf_;
        zero();
        return r;
    }

    /// The underlying tarn_buf (still owned by this Buffer).
    const tarn_buf& raw() const noexcept { return buf_; }

    /// The bytes, valid while this Buffer holds them.
    std::string_view view() const noexcept {
        return buf_.len == 0 ? std::string_view()
                             : std::string_view(reinterpret_cast<const char*>(buf_.data),
                                                buf_.len);
    }

    /// A copy of the bytes.
    std::string str() const { return std::string(view()); }

    /// The number of bytes.
    std::size_t size() const noexcept { return buf_.len; }

    /// Whether there are no bytes.
    bool empty() const noexcept { return buf_.len == 0; }

private:
    void zero() noexcept { buf_ = tarn_buf{nullptr, 0, nullptr}; }

    tarn_buf buf_;
};

// ---------------------------------------------------------------------------------------
// Values and options
// ---------------------------------------------------------------------------------------

/// A document's metadata. A plain value.
struct DocInfo {
    /// The version (store-wide sequence number of the document's last change).
    std::uint64_t version = 0;
    /// When it last changed, engine-clock ms since the Unix epoch.
    std::uint64_t modified_ms = 0;
    /// When it expires, engine-clock ms since the Unix epoch; nullopt: never.
    std::optional<std::uint64_t> expires_ms;

    /// From the C struct (expires_ms 0 means never).
    static DocInfo from_c(const tarn_doc_info& c) noexcept {
        DocInfo d;
        d.version = c.version;
        d.modified_ms = c.modified_ms;
        if (c.expires_ms != 0) {
            d.expires_ms = c.expires_ms;
        }
        return d;
    }
};

/// A document read from the store: a plain, copyable value. It holds a copy of the
/// JSON text (std::string), chosen so that a Document outlives its Buffer and its
/// Engine and compares and copies like any value; Store::read_shared returns a
/// SharedDocument that keeps the library's bytes instead, without the copy.
struct Document {
    /// The JSON text, byte for byte as written (or as a patch produced it).
    std::string json;
    /// Its metadata.
    DocInfo info;
};

/// A document read without copying: the JSON bytes stay the library's (shared with
/// the store) until the Buffer is released. Move-only, like Buffer.
struct SharedDocument {
    /// The JSON text.
    Buffer json;
    /// Its metadata.
    DocInfo info;
};

/// The result of Store::patch. A plain value.
struct PatchResult {
    /// The new version.
    std::uint64_t version = 0;
    /// The patched document (a copy), or nullopt with remove_data_from_reply.
    std::optional<std::string> json;
};

/// Options of Store::write. A plain value; the defaults are an unconditional,
/// permanent write by nobody in particular.
struct WriteOptions {
    /// Fail with TARN_EXISTS if the key holds a live document (atomic: of racing
    /// writers exactly one succeeds).
    bool fail_if_exists = false;
    /// Expire this long after the write (engine clock). Must be positive: zero or
    /// negative throws TARN_INVALID_ARGUMENT. nullopt: never.
    std::optional<std::chrono::milliseconds> ttl;
    /// Write only if the current version is this (0: only if absent), else
    /// TARN_VERSION_CONFLICT.
    std::optional<std::uint64_t> if_version;
    /// Remove the document when the writing session (`session`, required: without it
    /// the write throws TARN_INVALID_ARGUMENT) closes, with a "session_expire" event. A
    /// later write without it makes the document permanent again.
    bool expire_session = false;
    /// The id of the session making the change (Session::id()); 0: none. It must be
    /// open (else TARN_NOT_FOUND). Listeners see it as the event's "session" (and may
    /// skip their own session's changes).
    std::uint64_t session = 0;
    /// A request id passed through to listeners ("request_id"); no '\0' in it, and no
    /// longer than a key (else TARN_TOO_LARGE).
    std::optional<std::string> request_id;
    /// JSON text passed through to listeners ("user_data"); validated by the library.
    std::optional<std::string> user_data;

    /// The C options struct. It borrows request_id and user_data from this object: use
    /// it only while this object lives, unchanged (hence not callable on a temporary).
    tarn_write_options to_c() const& {
        tarn_write_options c{0, 0, 0, detail::c_meta(session, request_id, user_data)};
        if (fail_if_exists) {
            c.flags |= TARN_WRITE_FAIL_IF_EXISTS;
        }
        if (ttl) {
            c.ttl_ms = detail::c_ms(*ttl, "the TTL");
            if (c.ttl_ms == 0) {
                throw Error(TARN_INVALID_ARGUMENT,
                            "a TTL of zero is refused (leave ttl empty for no expiry)");
            }
        }
        if (if_version) {
            c.flags |= TARN_WRITE_IF_VERSION;
            c.if_version = *if_version;
        }
        if (expire_session) {
            c.flags |= TARN_WRITE_EXPIRE_SESSION;
        }
        return c;
    }
    tarn_write_options to_c() const&& = delete;
};

/// Options of Store::patch. A plain value.
struct PatchOptions {
    /// Do not return the patched document (PatchResult::json stays nullopt).
    bool remove_data_from_reply = false;
    /// Patch only if the current version is this, else TARN_VERSION_CONFLICT.
    std::optional<std::uint64_t> if_version;
    /// The id of the session making the change; 0: none (see WriteOptions::session).
    std::uint64_t session = 0;
    /// A request id passed through to listeners; no '\0' in it.
    std::optional<std::string> request_id;
    /// JSON text passed through to listeners; validated by the library.
    std::optional<std::string> user_data;

    /// The C options struct; borrows request_id and user_data (see WriteOptions).
    tarn_patch_options to_c() const& {
        tarn_patch_options c{0, 0, detail::c_meta(session, request_id, user_data)};
        if (remove_data_from_reply) {
            c.flags |= TARN_PATCH_REMOVE_DATA_FROM_REPLY;
        }
        if (if_version) {
            c.flags |= TARN_PATCH_IF_VERSION;
            c.if_version = *if_version;
        }
        return c;
    }
    tarn_patch_options to_c() const&& = delete;
};

/// Options of Store::remove. A plain value.
struct RemoveOptions {
    /// Remove only if the current version is this, else TARN_VERSION_CONFLICT.
    std::optional<std::uint64_t> if_version;
    /// The id of the session making the change; 0: none (see WriteOptions::session).
    std::uint64_t session = 0;
    /// A request id passed through to listeners; no '\0' in it.
    std::optional<std::string> request_id;
    /// JSON text passed through to listeners; validated by the library.
    std::optional<std::string> user_data;

    /// The C options struct; borrows request_id and user_data (see WriteOptions).
    tarn_remove_options to_c() const& {
        tarn_remove_options c{0, 0, detail::c_meta(session, request_id, user_data)};
        if (if_version) {
            c.flags |= TARN_REMOVE_IF_VERSION;
            c.if_version = *if_version;
        }
        return c;
    }
    tarn_remove_options to_c() const&& = delete;
};

/// Options of Bus::listen and Bus::subscribe. A plain value; the defaults are a
/// listener without values, with a queue of 1024 that drops (and counts) at the bound.
struct ListenOptions {
    /// Deliver document values (and signal values) in the events' "value".
    bool send_values = false;
    /// Skip changes and signals made by the listener's own session (`session`).
    bool ignore_own = false;
    /// At the bound, make the publisher wait for room (up to block_timeout) instead of
    /// dropping the event. Never waits on an engine thread (a callback publishing):
    /// there it drops and counts.
    bool block = false;
    /// The queue bound; 0: the library's default (1024).
    std::size_t capacity = 0;
    /// With block, the longest a publisher waits for room; 0: the library's default
    /// (1000 ms). Negative throws TARN_INVALID_ARGUMENT.
    std::chrono::milliseconds block_timeout{0};
    /// First deliver every retained change after this store version, then go live;
    /// TARN_TOO_OLD if the change log no longer has them all
    /// (EngineBuilder::change_log_capacity).
    std::optional<std::uint64_t> from_version;
    /// The session the listener belongs to (it stops when the session closes); 0: none.
    std::uint64_t session = 0;

    /// The C options struct (the session is a separate argument of the C calls).
    tarn_listen_options to_c() const {
        tarn_listen_options c{0, capacity, detail::c_ms(block_timeout, "the block timeout"), 0};
        if (send_values) {
            c.flags |= TARN_LISTEN_SEND_VALUES;
        }
        if (ignore_own) {
            c.flags |= TARN_LISTEN_IGNORE_OWN;
        }
        if (block) {
            c.flags |= TARN_LISTEN_BLOCK;
        }
        if (from_version) {
            c.flags |= TARN_LISTEN_FROM_VERSION;
            c.from_version = *from_version;
        }
        return c;
    }
};

// ---------------------------------------------------------------------------------------
// Store and Clock: views of an engine
// ---------------------------------------------------------------------------------------

/// The JSON document store of an Engine.
///
/// Ownership: a non-owning view (one pointer); get it from Engine::store(). It stays
/// valid while the tarn_engine lives, also if the Engine object that owns it is moved
/// (the handle moves with it); using it after that engine is freed is undefined. On a
/// closed engine every operation throws TARN_CLOSED.
/// Thread-safety: copy it freely and call it from any number of threads at once.
class Store {
public:
    /// A view of `engine` (not owned). Normally obtained with Engine::store().
    explicit Store(const tarn_engine* engine) noexcept : engine_(engine) {}

    /// Reads one document (a copy of its JSON). Throws TARN_NOT_FOUND if the key is
    /// absent or expired.
    Document read(std::string_view bucket, std::string_view key) const {
        SharedDocument d = read_shared(bucket, key);
        return Document{d.json.str(), d.info};
    }

    /// Reads one document without copying its bytes (they stay shared with the
    /// store). Throws TARN_NOT_FOUND if the key is absent or expired.
    SharedDocument read_shared(std::string_view bucket, std::string_view key) const {
        std::optional<SharedDocument> d = read_impl(bucket, key, false);
        return std::move(*d);
    }

    /// Reads one document; nullopt when it is absent or expired (TARN_NOT_FOUND). Every
    /// other failure (bad name, closed engine, ...) throws.
    std::optional<Document> try_read(std::string_view bucket, std::string_view key) const {
        std::optional<SharedDocument> d = read_impl(bucket, key, true);
        if (!d) {
            return std::nullopt;
        }
        return Document{d->json.str(), d->info};
    }

    /// Every live document of a bucket, as the JSON array of tarn_store_read_all
    /// (sorted by key; `[]` for a bucket nobody wrote).
    std::string read_all(std::string_view bucket) const {
        const std::string b = detail::c_name(bucket, "bucket");
        Buffer out;
        check(tarn_store_read_all(engine_, b.c_str(), out.out()));
        return out.str();
    }

    /// A bucket's keys as a JSON array of strings (keys_only), or an array of
    /// {"key":..., "value":...}; sorted by key.
    std::string list(std::string_view bucket, bool keys_only = true) const {
        const std::string b = detail::c_name(bucket, "bucket");
        Buffer out;
        check(tarn_store_list(engine_, b.c_str(), keys_only ? TARN_LIST_KEYS_ONLY : 0u,
                              out.out()));
        return out.str();
    }

    /// The names of the buckets holding live documents, as a sorted JSON array.
    std::string buckets() const {
        Buffer out;
        check(tarn_store_buckets(engine_, out.out()));
        return out.str();
    }

    /// Writes a document (JSON text, validated and stored byte for byte); returns its
    /// new version. On failure nothing changed.
    std::uint64_t write(std::string_view bucket, std::string_view key, std::string_view json,
                        const WriteOptions& options = {}) const {
        const std::string b = detail::c_name(bucket, "bucket");
        const std::string k = detail::c_name(key, "key");
        const tarn_write_options o = options.to_c();
        std::uint64_t version = 0;
        check(tarn_store_write(engine_, b.c_str(), k.c_str(), detail::c_bytes(json),
                               json.size(), &o, &version));
        return version;
    }

    /// Applies an RFC 6902 patch (JSON text), all operations or none; on failure the
    /// stored document is untouched.
    PatchResult patch(std::string_view bucket, std::string_view key, std::string_view ops,
                      const PatchOptions& options = {}) const {
        const std::string b = detail::c_name(bucket, "bucket");
        const std::string k = detail::c_name(key, "key");
        const tarn_patch_options o = options.to_c();
        PatchResult r;
        Buffer doc;
        check(tarn_store_patch(engine_, b.c_str(), k.c_str(), detail::c_bytes(ops), ops.size(),
                               &o, &r.version, options.remove_data_from_reply ? nullptr
                                                                              : doc.out()));
        if (!options.remove_data_from_reply) {
            r.json = doc.str();
        }
        return r;
    }

    /// Removes a document; returns the removal's version. Throws TARN_NOT_FOUND when
    /// absent.
    std::uint64_t remove(std::string_view bucket, std::string_view key,
                         const RemoveOptions& options = {}) const {
        const std::string b = detail::c_name(bucket, "bucket");
        const std::string k = detail::c_name(key, "key");
        const tarn_remove_options o = options.to_c();
        std::uint64_t version = 0;
        check(tarn_store_remove(engine_, b.c_str(), k.c_str(), &o, &version));
        return version;
    }

    /// The newest version the store has assigned.
    std::uint64_t last_version() const {
        std::uint64_t version = 0;
        check(tarn_store_last_version(engine_, &version));
        return version;
    }

    /// The engine handle this view uses (not owned).
    const tarn_engine* get() const noexcept { return engine_; }

private:
    std::optional<SharedDocument> read_impl(std::string_view bucket, std::string_view key,
                                            bool not_found_is_empty) const {
        const std::string b = detail::c_name(bucket, "bucket");
        const std::string k = detail::c_name(key, "key");
        SharedDocument d;
        tarn_doc_info info{0, 0, 0};
        const tarn_status s = tarn_store_read(engine_, b.c_str(), k.c_str(), d.json.out(), &info);
        if (s == TARN_NOT_FOUND && not_found_is_empty) {
            return std::nullopt;
        }
        check(s);
        d.info = DocInfo::from_c(info);
        return std::optional<SharedDocument>(std::move(d));
    }

    const tarn_engine* engine_;
};

/// The clock of an Engine (ms since the Unix epoch). set/advance work only on a manual
/// clock (EngineBuilder::manual_clock); on the system clock they throw
/// TARN_NOT_SUPPORTED.
///
/// Ownership: a non-owning view, valid while the tarn_engine lives (as for Store).
/// Thread-safety: copy it freely and call it from any number of threads at once.
class Clock {
public:
    /// A view of `engine` (not owned). Normally obtained with Engine::clock().
    explicit Clock(const tarn_engine* engine) noexcept : engine_(engine) {}

    /// The engine clock's current time.
    std::uint64_t now() const {
        std::uint64_t ms = 0;
        check(tarn_clock_now(engine_, &ms));
        return ms;
    }

    /// Sets a manual clock to `ms`; throws TARN_INVALID_ARGUMENT when `ms` is earlier
    /// than now (the clock never goes backwards).
    void set(std::uint64_t ms) const { check(tarn_clock_set(engine_, ms)); }

    /// Advances a manual clock by `by` (not negative); returns the new time.
    std::uint64_t advance(std::chrono::milliseconds by) const {
        const std::uint64_t ms = detail::c_ms(by, "the clock advance");
        std::uint64_t now_ms = 0;
        check(tarn_clock_advance(engine_, ms, &now_ms));
        return now_ms;
    }

    /// The engine handle this view uses (not owned).
    const tarn_engine* get() const noexcept { return engine_; }

private:
    const tarn_engine* engine_;
};

// ---------------------------------------------------------------------------------------
// Sessions, listeners and the bus
// ---------------------------------------------------------------------------------------

namespace detail {

/// What a callback Listener owns on the C++ side: the user's std::function (handed to
/// the library as user_data) and the count of exceptions it threw.
struct ListenState {
    explicit ListenState(std::function<void(std::string_view)> f) : fn(std::move(f)) {}
    std::function<void(std::string_view)> fn;
    std::atomic<std::uint64_t> exceptions{0};
    /// Set by a Listener destroyed from inside this very callback (on its thread): the
    /// trampoline deletes the state once the callback has returned.
    bool orphaned = false;
};

/// One running callback on this thread; they nest when a callback's own work runs
/// another listener's callback inline on the same worker.
struct CallbackFrame {
    ListenState* state;
    CallbackFrame* outer;
};

inline CallbackFrame*& callback_frames() noexcept {
    static thread_local CallbackFrame* top = nullptr;
    return top;
}

/// Whether the calling thread is inside `state`'s callback.
inline bool in_callback_of(const ListenState* state) noexcept {
    for (const CallbackFrame* f = callback_frames(); f != nullptr; f = f->outer) {
        if (f->state == state) {
            return true;
        }
    }
    return false;
}

/// The tarn_event_fn of every callback Listener: runs the std::function behind
/// `user_data` on the engine worker thread the library calls it on. No exception
/// leaves it (C has no unwinding): each one is caught and counted.
inline void event_trampoline(const std::uint8_t* event, std::size_t len,
                             void* user_data) noexcept {
    ListenState* state = static_cast<ListenState*>(user_data);
    CallbackFrame frame{state, callback_frames()};
    callback_frames() = &frame;
    try {
        state->fn(std::string_view(reinterpret_cast<const char*>(event), len));
    } catch (...) {
        state->exceptions.fetch_add(1, std::memory_order_relaxed);
    }
    callback_frames() = frame.outer;
    if (state->orphaned) {
        delete state;
    }
}

}  // namespace detail

/// A session: one client of the engine, opened with Engine::open_session. It owns the
/// listeners made with its id (ListenOptions::session) and the documents written with
/// WriteOptions::expire_session and its id; closing it stops those listeners, removes
/// those documents (a "session_expire" event each) and publishes "session_close" on the
/// bucket "$sessions" (opening published "session_open" there).
///
/// Ownership: holds one session id, which the engine keeps; the destructor closes the
/// session (tarn_session_close; a TARN_NOT_FOUND — already released — is ignored, as is
/// every other failure). Move-only; a moved-from Session is empty: its calls throw
/// TARN_NULL_ARGUMENT and its destructor does nothing. A Session that outlives its
/// Engine is safe to destroy (the engine closed it); its other calls throw TARN_CLOSED.
/// Thread-safety: id(), keepalive() and is_open() may be called from many threads at
/// once; close(), moving and destroying must not race with other use of the object.
class Session {
public:
    /// An empty session (holds no id).
    Session() noexcept = default;

    /// Takes ownership of session `id` of `engine` (from tarn_session_open). `life` is
    /// the Engine's (may be empty for a raw handle that outlives the Session).
    Session(const tarn_engine* engine, std::shared_ptr<detail::EngineLife> life,
            std::uint64_t id) noexcept
        : engine_(engine), life_(std::move(life)), id_(id) {}

    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    /// Takes `other`'s session; `other` becomes empty.
    Session(Session&& other) noexcept
        : engine_(std::exchange(other.engine_, nullptr)),
          life_(std::move(other.life_)),
          id_(std::exchange(other.id_, 0)),
          closed_(std::exchange(other.closed_, false)) {}

    /// Closes this session and takes `other`'s; `other` becomes empty.
    Session& operator=(Session&& other) noexcept {
        if (this != &other) {
            reset();
            engine_ = std::exchange(other.engine_, nullptr);
            life_ = std::move(other.life_);
            id_ = std::exchange(other.id_, 0);
            closed_ = std::exchange(other.closed_, false);
        }
        return *this;
    }

    /// Closes the session unless close() already did (errors ignored).
    ~Session() { reset(); }

    /// The session id (never 0 for a session that was opened; 0 when empty). It stays
    /// readable after close(), to match events against ("session" in the event JSON,
    /// and the key of its "$sessions" events).
    std::uint64_t id() const noexcept { return id_; }

    /// Whether this object holds a session (it may be closed).
    explicit operator bool() const noexcept { return engine_ != nullptr; }

    /// Keeps a leased session alive for another lease from now. Throws TARN_CLOSED if
    /// the lease already ran out, TARN_NOT_FOUND after close().
    void keepalive() const { check(tarn_session_keepalive(engine(), id_)); }

    /// Whether the session is open: false once its lease ran out, and after close()
    /// (without asking the library, which has released the id). Throws TARN_NOT_FOUND if
    /// the id was released behind this object's back (tarn_session_close on the raw id).
    bool is_open() const {
        if (closed_) {
            return false;
        }
        bool open = false;
        check(tarn_session_is_open(engine(), id_, &open));
        return open;
    }

    /// Closes the session now (see the class comment): its listeners stop, its
    /// session-expiring documents are removed with events, "session_close" is
    /// published. The id is released. A second close() does nothing; a failure
    /// throws (and the session counts as closed all the same).
    void close() {
        if (closed_) {
            return;
        }
        const tarn_engine* e = engine();
        closed_ = e != nullptr;
        check(tarn_session_close(e, id_));  // an empty Session: TARN_NULL_ARGUMENT
    }

    /// Closes the session (unless already closed; errors ignored) and empties this
    /// object, as the destructor does.
    void reset() noexcept {
        if (engine_ != nullptr && !closed_ && !detail::engine_freed(life_)) {
            (void)tarn_session_close(engine_, id_);
        }
        engine_ = nullptr;
        life_.reset();
        id_ = 0;
        closed_ = false;
    }

    /// The engine handle this session belongs to (not owned); NULL when empty.
    const tarn_engine* get() const noexcept { return engine_; }

private:
    const tarn_engine* engine() const {
        if (detail::engine_freed(life_)) {
            throw Error(TARN_CLOSED, "the engine of this session was freed");
        }
        return engine_;
    }

    const tarn_engine* engine_ = nullptr;
    std::shared_ptr<detail::EngineLife> life_;
    std::uint64_t id_ = 0;
    bool closed_ = false;
};

/// A listener on a (bucket, key) pattern of the bus, made by Bus::listen (events go to
/// a callback) or Bus::subscribe (events are pulled with next(), or awaited on fd()).
/// Each event is one JSON object, `{"kind","bucket","key","version","timestamp_ms",
/// "session","request_id","user_data","value","ops","missed"}`, absent parts null.
///
/// Ownership: holds one listener id, which the engine keeps, and for a callback
/// listener the heap-allocated std::function. The destructor (and reset()) frees the
/// listener with tarn_listener_free — which first waits for a callback that is running
/// on another thread to return — and only then deletes the std::function, so the
/// callback never runs on a destroyed function. Destroyed from inside its own callback,
/// it does not wait (the library does not) and the std::function is deleted right
/// after that callback returns. Do not destroy a Listener while holding a lock its
/// callback takes: the wait would deadlock. Move-only; a moved-from or reset Listener
/// is empty: its calls throw TARN_NULL_ARGUMENT. A Listener that outlives its Engine is
/// safe to destroy (the engine stopped it; only the std::function is left to delete);
/// its other calls throw TARN_CLOSED.
/// Thread-safety: id(), next(), fd(), stats() and exceptions() may be called from many
/// threads at once; reset(), moving and destroying must not race with other use of
/// the object.
class Listener {
public:
    /// An empty listener.
    Listener() noexcept = default;

    /// Takes ownership of listener `id` of `engine` and, for a callback listener, of
    /// `state` (the object its user_data points to; NULL for a pull listener).
    Listener(const tarn_engine* engine, std::shared_ptr<detail::EngineLife> life,
             std::uint64_t id, detail::ListenState* state) noexcept
        : engine_(engine), life_(std::move(life)), id_(id), state_(state) {}

    Listener(const Listener&) = delete;
    Listener& operator=(const Listener&) = delete;

    /// Takes `other`'s listener (its callback keeps running, undisturbed); `other`
    /// becomes empty.
    Listener(Listener&& other) noexcept
        : engine_(std::exchange(other.engine_, nullptr)),
          life_(std::move(other.life_)),
          id_(std::exchange(other.id_, 0)),
          state_(std::exchange(other.state_, nullptr)) {}

    /// Frees this listener (as the destructor does) and takes `other`'s.
    Listener& operator=(Listener&& other) noexcept {
        if (this != &other) {
            reset();
            engine_ = std::exchange(other.engine_, nullptr);
            life_ = std::move(other.life_);
            id_ = std::exchange(other.id_, 0);
            state_ = std::exchange(other.state_, nullptr);
        }
        return *this;
    }

    /// Frees the listener, then its std::function (see the class comment).
    ~Listener() { reset(); }

    /// The listener id (unique within its engine); 0 when empty.
    std::uint64_t id() const noexcept { return id_; }

    /// Whether this object holds a listener.
    explicit operator bool() const noexcept { return engine_ != nullptr; }

    /// Whether events go to a callback (Bus::listen) rather than being pulled.
    bool has_callback() const noexcept { return state_ != nullptr; }

    /// Takes the next event of a pull listener (a copy of its JSON), waiting up to
    /// `timeout` (0: no wait) on the calling thread; nullopt when none came
    /// (TARN_TIMEOUT). Throws TARN_NOT_SUPPORTED for a callback listener, TARN_CLOSED
    /// once its session closed.
    std::optional<std::string> next(
        std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) const {
        const std::uint64_t ms = detail::c_ms(timeout, "the timeout");
        Buffer event;
        const tarn_status s = tarn_listener_next(engine(), id_, ms, event.out());
        if (s == TARN_TIMEOUT) {
            return std::nullopt;
        }
        check(s);
        return event.str();
    }

    /// A file descriptor readable exactly while events wait on this pull listener (for
    /// poll/epoll/libuv), and once the listener closed (its session or engine closing;
    /// next() then throws TARN_CLOSED). It belongs to the listener: do not read, write
    /// or close it; valid until the Listener is freed. Throws TARN_NOT_SUPPORTED for a
    /// callback listener.
    int fd() const {
        std::int32_t fd = -1;
        check(tarn_listener_fd(engine(), id_, &fd));
        return static_cast<int>(fd);
    }

    /// The library's counters: events delivered, events missed (dropped at the bound),
    /// panics caught. (C++ exceptions never reach the library: see exceptions().)
    tarn_listener_stats stats() const {
        tarn_listener_stats st{0, 0, 0};
        check(tarn_listener_get_stats(engine(), id_, &st));
        return st;
    }

    /// How many C++ exceptions the callback threw (each caught by the wrapper; the
    /// listener went on). 0 for a pull listener.
    std::uint64_t exceptions() const noexcept {
        return state_ != nullptr ? state_->exceptions.load(std::memory_order_relaxed) : 0;
    }

    /// Frees the listener now, as the destructor does; it becomes empty. Harmless when
    /// empty.
    void reset() noexcept {
        if (engine_ != nullptr && !detail::engine_freed(life_)) {
            // Waits for a callback running on another thread; errors (an id already
            // freed through the C API) leave nothing to release.
            (void)tarn_listener_free(engine_, id_);
        }
        if (state_ != nullptr) {
            if (detail::in_callback_of(state_)) {
                state_->orphaned = true;  // the trampoline deletes it on return
            } else {
                delete state_;
            }
        }
        engine_ = nullptr;
        life_.reset();
        id_ = 0;
        state_ = nullptr;
    }

    /// The engine handle this listener belongs to (not owned); NULL when empty.
    const tarn_engine* get() const noexcept { return engine_; }

private:
    const tarn_engine* engine() const {
        if (detail::engine_freed(life_)) {
            throw Error(TARN_CLOSED, "the engine of this listener was freed");
        }
        return engine_;
    }

    const tarn_engine* engine_ = nullptr;
    std::shared_ptr<detail::EngineLife> life_;
    std::uint64_t id_ = 0;
    detail::ListenState* state_ = nullptr;
};

/// The event bus of an Engine: listeners on (bucket, key) patterns where either may be
/// "*", change events of the store, signals, and presence events on "$sessions".
///
/// Ownership: a view (the handle, and a share of the Engine's liveness record so that
/// the Listeners it makes can tell when their Engine is gone); get it from
/// Engine::bus(). Like Store it follows the handle when the Engine is moved, and using
/// it after its engine is freed is undefined. On a closed engine every operation
/// throws TARN_CLOSED.
/// Thread-safety: copy it freely and call it from any number of threads at once.
class Bus {
public:
    /// A view of `engine` (not owned). Listeners made through a Bus built this way
    /// cannot tell when the engine is freed: destroy them first. Normally obtained with
    /// Engine::bus(), which has no such restriction.
    explicit Bus(const tarn_engine* engine) noexcept : engine_(engine) {}

    /// A view of `engine` sharing the Engine's liveness record.
    Bus(const tarn_engine* engine, std::shared_ptr<detail::EngineLife> life) noexcept
        : engine_(engine), life_(std::move(life)) {}

    /// Listens on `bucket`/`key` (either may be "*"; bucket "$sessions" for presence)
    /// and calls `callback` with each event's JSON (valid only during the call: copy it
    /// to keep it). The std::function is moved to the heap and owned by the returned
    /// Listener.
    ///
    /// Threads: the callback runs on an engine worker thread — never the calling
    /// thread, possibly a different one each time, possibly before listen() returns
    /// (when from_version replays) — one event at a time per listener, never under a
    /// library lock. So what it captures must be safe to use from another thread, and
    /// it may call any tarn function (write, read, signal, free another listener)
    /// except Engine::settle (TARN_NOT_SUPPORTED there); it should not block for long
    /// (it holds a worker). An exception it throws is caught and counted
    /// (Listener::exceptions()); the listener goes on.
    /// Throws TARN_NULL_ARGUMENT for an empty std::function, TARN_INVALID_ARGUMENT for
    /// a bad pattern, TARN_NOT_FOUND for an unknown ListenOptions::session, TARN_TOO_OLD
    /// for a from_version the change log no longer covers.
    Listener listen(std::string_view bucket, std::string_view key,
                    std::function<void(std::string_view event_json)> callback,
                    const ListenOptions& options = {}) const {
        const std::string b = detail::c_name(bucket, "bucket");
        const std::string k = detail::c_name(key, "key");
        const tarn_listen_options o = options.to_c();
        if (!callback) {
            throw Error(TARN_NULL_ARGUMENT, "the callback is an empty std::function");
        }
        std::unique_ptr<detail::ListenState> state(new detail::ListenState(std::move(callback)));
        std::uint64_t id = 0;
        check(tarn_bus_listen(engine_, options.session, b.c_str(), k.c_str(), &o,
                              &detail::event_trampoline, state.get(), &id));
        return Listener(engine_, life_, id, state.release());
    }

    /// Listens on `bucket`/`key` (either may be "*") for pulling: take events with
    /// Listener::next, or wait on Listener::fd. Throws as listen() does.
    Listener subscribe(std::string_view bucket, std::string_view key,
                       const ListenOptions& options = {}) const {
        const std::string b = detail::c_name(bucket, "bucket");
        const std::string k = detail::c_name(key, "key");
        const tarn_listen_options o = options.to_c();
        std::uint64_t id = 0;
        check(tarn_bus_subscribe(engine_, options.session, b.c_str(), k.c_str(), &o, &id));
        return Listener(engine_, life_, id, nullptr);
    }

    /// Sends a signal event to every matching listener (kind "signal", version 0); it
    /// is never stored. `json` is its value (JSON text, validated; nullopt: none);
    /// `session` the sending session's id (0: none).
    void signal(std::string_view bucket, std::string_view key,
                std::optional<std::string_view> json = std::nullopt,
                std::uint64_t session = 0) const {
        const std::string b = detail::c_name(bucket, "bucket");
        const std::string k = detail::c_name(key, "key");
        const std::uint8_t* data = json ? detail::c_bytes(*json) : nullptr;
        const std::size_t len = json ? json->size() : 0;
        check(tarn_bus_signal(engine_, session, b.c_str(), k.c_str(), data, len));
    }

    /// The engine handle this view uses (not owned).
    const tarn_engine* get() const noexcept { return engine_; }

private:
    const tarn_engine* engine_;
    std::shared_ptr<detail::EngineLife> life_;
};

// ---------------------------------------------------------------------------------------
// Engine and its builder
// ---------------------------------------------------------------------------------------

/// One embedded tarn instance.
///
/// Ownership: owns one tarn_engine and frees it (tarn_engine_free, which closes it
/// first: the engine's threads stop, no callback runs afterwards) when destroyed or
/// assigned over. Move-only; a moved-from Engine holds no handle and its calls throw
/// TARN_NULL_ARGUMENT. Store, Clock and Bus views taken earlier, and the Listeners and
/// Sessions made through it, follow the handle, not the Engine object. Listeners and
/// Sessions are best destroyed before their Engine; one that outlives it is still safe
/// to destroy afterwards (see Listener, Session) — but not from a callback while the
/// Engine is being destroyed.
/// Thread-safety: store(), clock(), bus(), open_session(), settle(), close() and get()
/// may be called from many threads at once; moving, assigning and destroying must not
/// race with any other use of the engine (including through its views, Listeners and
/// Sessions).
class Engine {
public:
    /// An engine with the default settings (system clock; tarn_engine_new).
    static Engine create() {
        tarn_engine* e = nullptr;
        check(tarn_engine_new(&e));
        return Engine(e);
    }

    /// Takes ownership of a handle from tarn_engine_new / tarn_engine_builder_build
    /// (NULL gives an empty Engine). Throws std::bad_alloc (after freeing the handle)
    /// if its small liveness record cannot be allocated.
    explicit Engine(tarn_engine* owned) : engine_(owned) {
        if (owned != nullptr) {
            try {
                life_ = std::make_shared<detail::EngineLife>();
            } catch (...) {
                tarn_engine_free(owned);
                throw;
            }
        }
    }

    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    /// Takes `other`'s handle; `other` becomes empty.
    Engine(Engine&& other) noexcept
        : engine_(std::exchange(other.engine_, nullptr)), life_(std::move(other.life_)) {}

    /// Frees this engine and takes `other`'s handle; `other` becomes empty.
    Engine& operator=(Engine&& other) noexcept {
        if (this != &other) {
            free_now();
            engine_ = std::exchange(other.engine_, nullptr);
            life_ = std::move(other.life_);
        }
        return *this;
    }

    /// Closes and frees the engine (tarn_engine_free).
    ~Engine() { free_now(); }

    /// The document store (a view; see Store).
    Store store() const noexcept { return Store(engine_); }

    /// The engine clock (a view; see Clock).
    Clock clock() const noexcept { return Clock(engine_); }

    /// The event bus (a view; see Bus).
    Bus bus() const noexcept { return Bus(engine_, life_); }

    /// Opens a session for client `client_id` (1..=256 bytes of UTF-8, no control
    /// characters, no '\0'). With a positive `lease` the session is closed when not
    /// kept alive (Session::keepalive) within that long of the engine clock; 0: no
    /// lease; negative throws TARN_INVALID_ARGUMENT. Publishes "session_open" on
    /// "$sessions". The Session closes it when destroyed.
    Session open_session(std::string_view client_id,
                         std::chrono::milliseconds lease = std::chrono::milliseconds(0)) const {
        const std::string c = detail::c_name(client_id, "the client id");
        const std::uint64_t ms = detail::c_ms(lease, "the lease");
        std::uint64_t id = 0;
        check(tarn_session_open(engine_, c.c_str(), ms, &id));
        return Session(engine_, life_, id);
    }

    /// Waits until background work has settled (no queued or running job — so every
    /// callback due has run —, no timer due by the engine clock). 0 waits without
    /// limit; otherwise throws TARN_TIMEOUT after `timeout`. Throws TARN_NOT_SUPPORTED
    /// from inside a callback.
    void settle(std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) const {
        check(tarn_engine_settle(engine_, detail::c_ms(timeout, "the settle timeout")));
    }

    /// Stops the engine's threads and waits for them (a running callback finishes; no
    /// callback runs afterwards); afterwards its operations throw TARN_CLOSED. The
    /// handle stays valid until the Engine is destroyed, and Listeners and Sessions can
    /// still be destroyed. Harmless twice.
    void close() const { check(tarn_engine_close(engine_)); }

    /// The handle (still owned by this Engine); NULL when empty.
    const tarn_engine* get() const noexcept { return engine_; }

    /// Whether this Engine holds a handle.
    explicit operator bool() const noexcept { return engine_ != nullptr; }

    /// Gives up ownership: the caller must tarn_engine_free the result, and only after
    /// destroying the Listeners and Sessions made through this Engine.
    tarn_engine* release() noexcept {
        life_.reset();
        return std::exchange(engine_, nullptr);
    }

private:
    void free_now() noexcept {
        if (engine_ != nullptr) {
            tarn_engine_free(engine_);
            // Only now: Listeners and Sessions destroyed from here on release nothing
            // in the library (it released everything) and call nothing.
            if (life_ != nullptr) {
                life_->freed.store(true, std::memory_order_release);
            }
        }
        engine_ = nullptr;
        life_.reset();
    }

    tarn_engine* engine_;
    std::shared_ptr<detail::EngineLife> life_;
};

/// Settings for new engines; start from the defaults (system clock; workers: cores,
/// 2..8; queue 4096; bucket names 128 B; keys 1024 B; documents 16 MiB; unbounded
/// store). Values are checked by build().
///
/// Ownership: owns one tarn_engine_builder (tarn_engine_builder_free on destruction).
/// Move-only; a moved-from builder's calls throw TARN_NULL_ARGUMENT. build() does not
/// consume it: it can build several independent engines.
/// Thread-safety: not shared; use one builder from one thread at a time.
class EngineBuilder {
public:
    /// A builder with the default settings.
    EngineBuilder() : builder_(tarn_engine_builder_new()) {
        if (builder_ == nullptr) {
            throw Error::from_last(TARN_PANIC);
        }
    }

    EngineBuilder(const EngineBuilder&) = delete;
    EngineBuilder& operator=(const EngineBuilder&) = delete;

    /// Takes `other`'s settings; `other` becomes empty.
    EngineBuilder(EngineBuilder&& other) noexcept
        : builder_(std::exchange(other.builder_, nullptr)) {}

    /// Frees this builder and takes `other`'s settings; `other` becomes empty.
    EngineBuilder& operator=(EngineBuilder&& other) noexcept {
        if (this != &other) {
            tarn_engine_builder_free(builder_);
            builder_ = std::exchange(other.builder_, nullptr);
        }
        return *this;
    }

    /// Frees the builder (engines built from it are unaffected).
    ~EngineBuilder() { tarn_engine_builder_free(builder_); }

    /// Number of worker threads (build accepts 1..256).
    EngineBuilder& workers(std::uint32_t n) {
        check(tarn_engine_builder_workers(builder_, n));
        return *this;
    }

    /// Bound of the worker pool's queue (build accepts at least 1).
    EngineBuilder& queue_capacity(std::size_t n) {
        check(tarn_engine_builder_queue_capacity(builder_, n));
        return *this;
    }

    /// Uses a manual clock starting at `start_ms` (ms since the Unix epoch), moved only
    /// by Clock::set and Clock::advance. For tests.
    EngineBuilder& manual_clock(std::uint64_t start_ms) {
        check(tarn_engine_builder_manual_clock(builder_, start_ms));
        return *this;
    }

    /// Longest bucket name, in bytes (longer: TARN_TOO_LARGE).
    EngineBuilder& max_bucket_bytes(std::size_t n) {
        check(tarn_engine_builder_max_bucket_bytes(builder_, n));
        return *this;
    }

    /// Longest key, in bytes (longer: TARN_TOO_LARGE).
    EngineBuilder& max_key_bytes(std::size_t n) {
        check(tarn_engine_builder_max_key_bytes(builder_, n));
        return *this;
    }

    /// Largest document, in bytes of JSON text (larger: TARN_TOO_LARGE).
    EngineBuilder& max_document_bytes(std::size_t n) {
        check(tarn_engine_builder_max_document_bytes(builder_, n));
        return *this;
    }

    /// How many store changes the bus keeps for listeners that start from a version
    /// (ListenOptions::from_version); default 4096; 0 keeps none.
    EngineBuilder& change_log_capacity(std::size_t n) {
        check(tarn_engine_builder_change_log_capacity(builder_, n));
        return *this;
    }

    /// Bound on the total bytes of keys and documents; writes past it throw TARN_FULL.
    EngineBuilder& store_capacity_bytes(std::size_t n) {
        check(tarn_engine_builder_store_capacity_bytes(builder_, n));
        return *this;
    }

    /// A new engine with these settings (tarn_engine_builder_build); the builder stays
    /// usable. Throws TARN_INVALID_ARGUMENT for settings out of range.
    Engine build() const {
        tarn_engine* e = nullptr;
        check(tarn_engine_builder_build(builder_, &e));
        return Engine(e);
    }

    /// The handle (still owned by this builder); NULL when moved from.
    const tarn_engine_builder* get() const noexcept { return builder_; }

private:
    tarn_engine_builder* builder_;
};

}  // namespace tarn

#endif  // TARN_HPP
