/*
 * tarn.hpp: a header-only C++17 RAII layer over tarn.h, the C ABI of tarn.
 *
 * Written by hand (tarn.h is generated). Every C function of tarn.h is reached through
 * one of the classes or free functions below; nothing here adds behaviour the C ABI
 * does not have, except three checks C cannot make:
 * - a name (bucket or key) given as std::string_view is copied into a NUL-terminated
 *   std::string before the call, and a name containing '\0' throws tarn::Error with
 *   TARN_INVALID_ARGUMENT (C would silently cut it at the NUL);
 * - a TTL, settle timeout or clock advance that is negative, and a TTL of zero (which
 *   the C struct would read as "never expire"), throw TARN_INVALID_ARGUMENT;
 * - an empty std::string_view of JSON is passed as a valid zero-length range, so the
 *   library reports TARN_INVALID_JSON / TARN_INVALID_PATCH instead of a NULL argument.
 *
 * Errors: every failing call throws tarn::Error, which carries the tarn_status, its
 * name and the tarn_last_error() message captured on the calling thread right after
 * the failing call. The only non-throwing paths are Store::try_read (TARN_NOT_FOUND
 * gives std::nullopt) and destructors.
 *
 * Threads: Engine, Store and Clock may be used from many threads at the same time
 * (tarn_engine is thread-safe until it is freed); moving, assigning or destroying an
 * Engine must not race with any other use of it. Buffer and EngineBuilder are plain
 * values: use each from one thread at a time.
 */

#ifndef TARN_HPP
#define TARN_HPP

#include "tarn.h"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

// This wrapper was written against version 1 of the C ABI; a header with another ABI
// version needs the wrapper reviewed, so refuse to compile rather than guess.
static_assert(TARN_ABI_VERSION == 1, "tarn.hpp was written for TARN_ABI_VERSION 1");

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
/// permanent write.
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

    /// The C options struct.
    tarn_write_options to_c() const {
        tarn_write_options c{0, 0, 0};
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
        return c;
    }
};

/// Options of Store::patch. A plain value.
struct PatchOptions {
    /// Do not return the patched document (PatchResult::json stays nullopt).
    bool remove_data_from_reply = false;
    /// Patch only if the current version is this, else TARN_VERSION_CONFLICT.
    std::optional<std::uint64_t> if_version;

    /// The C options struct.
    tarn_patch_options to_c() const noexcept {
        tarn_patch_options c{0, 0};
        if (remove_data_from_reply) {
            c.flags |= TARN_PATCH_REMOVE_DATA_FROM_REPLY;
        }
        if (if_version) {
            c.flags |= TARN_PATCH_IF_VERSION;
            c.if_version = *if_version;
        }
        return c;
    }
};

/// Options of Store::remove. A plain value.
struct RemoveOptions {
    /// Remove only if the current version is this, else TARN_VERSION_CONFLICT.
    std::optional<std::uint64_t> if_version;

    /// The C options struct.
    tarn_remove_options to_c() const noexcept {
        tarn_remove_options c{0, 0};
        if (if_version) {
            c.flags |= TARN_REMOVE_IF_VERSION;
            c.if_version = *if_version;
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
// Engine and its builder
// ---------------------------------------------------------------------------------------

/// One embedded tarn instance.
///
/// Ownership: owns one tarn_engine and frees it (tarn_engine_free, which closes it
/// first) when destroyed or assigned over. Move-only; a moved-from Engine holds no
/// handle and its calls throw TARN_NULL_ARGUMENT. Store and Clock views taken earlier
/// follow the handle, not the Engine object.
/// Thread-safety: store(), clock(), settle(), close() and get() may be called from
/// many threads at once; moving, assigning and destroying must not race with any other
/// use of the engine (including through its Store and Clock views).
class Engine {
public:
    /// An engine with the default settings (system clock; tarn_engine_new).
    static Engine create() {
        tarn_engine* e = nullptr;
        check(tarn_engine_new(&e));
        return Engine(e);
    }

    /// Takes ownership of a handle from tarn_engine_new / tarn_engine_builder_build
    /// (NULL gives an empty Engine).
    explicit Engine(tarn_engine* owned) noexcept : engine_(owned) {}

    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    /// Takes `other`'s handle; `other` becomes empty.
    Engine(Engine&& other) noexcept : engine_(std::exchange(other.engine_, nullptr)) {}

    /// Frees this engine and takes `other`'s handle; `other` becomes empty.
    Engine& operator=(Engine&& other) noexcept {
        if (this != &other) {
            tarn_engine_free(engine_);
            engine_ = std::exchange(other.engine_, nullptr);
        }
        return *this;
    }

    /// Closes and frees the engine (tarn_engine_free).
    ~Engine() { tarn_engine_free(engine_); }

    /// The document store (a view; see Store).
    Store store() const noexcept { return Store(engine_); }

    /// The engine clock (a view; see Clock).
    Clock clock() const noexcept { return Clock(engine_); }

    /// Waits until background work has settled (no queued or running job, no timer due
    /// by the engine clock). 0 waits without limit; otherwise throws TARN_TIMEOUT after
    /// `timeout`. Throws TARN_NOT_SUPPORTED from inside a callback.
    void settle(std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) const {
        check(tarn_engine_settle(engine_, detail::c_ms(timeout, "the settle timeout")));
    }

    /// Stops the engine's threads and waits for them; afterwards its operations throw
    /// TARN_CLOSED. The handle stays valid until the Engine is destroyed. Harmless
    /// twice.
    void close() const { check(tarn_engine_close(engine_)); }

    /// The handle (still owned by this Engine); NULL when empty.
    const tarn_engine* get() const noexcept { return engine_; }

    /// Whether this Engine holds a handle.
    explicit operator bool() const noexcept { return engine_ != nullptr; }

    /// Gives up ownership: the caller must tarn_engine_free the result.
    tarn_engine* release() noexcept { return std::exchange(engine_, nullptr); }

private:
    tarn_engine* engine_;
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
