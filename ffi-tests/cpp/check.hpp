// check.hpp: the check harness the C++ test programs share (one program per .cpp
// file, so the counters are file-local). Prints "file:line: FAILED: ..." per failure.
//
// CHECK(cond), CHECK_EQ(a, b), CHECK_STATUS(status, statements...) (passes when the
// statements throw tarn::Error with that status), CHECK_NOTHROW(statements...).
#ifndef TARN_FFI_TESTS_CHECK_HPP
#define TARN_FFI_TESTS_CHECK_HPP

#include "tarn.hpp"

#include <atomic>
#include <cstdio>
#include <exception>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>


static std::atomic<int> g_passed{0};
static std::atomic<int> g_failed{0};
static std::mutex g_print;

static void record(bool ok, const char* file, int line, const std::string& what) {
    if (ok) {
        ++g_passed;
        return;
    }
    ++g_failed;
    std::lock_guard<std::mutex> lock(g_print);
    std::fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what.c_str());
}

template <typename T>
static std::string show(const T& v) {
    std::ostringstream os;
    os << v;
    return os.str();
}

template <typename A, typename B>
static void check_eq(const A& a, const B& b, const char* ea, const char* eb, const char* file,
                     int line) {
    const bool ok = a == b;
    record(ok, file, line,
           ok ? std::string() : std::string(ea) + " == " + eb + "  (" + show(a) + " vs " + show(b) + ")");
}

// Runs `body`; passes if it throws tarn::Error with `want`. Returns the error's what().
static std::string check_status(tarn_status want, const char* expr, const char* file, int line,
                                const std::function<void()>& body) {
    try {
        body();
    } catch (const tarn::Error& e) {
        const bool ok = e.status() == want;
        record(ok, file, line,
               std::string(expr) + ": expected " + std::string(tarn::status_name(want)) +
                   ", got " + e.what());
        return e.what();
    } catch (const std::exception& e) {
        record(false, file, line, std::string(expr) + ": non-tarn exception: " + e.what());
        return std::string();
    }
    record(false, file, line,
           std::string(expr) + ": expected " + std::string(tarn::status_name(want)) +
               ", nothing thrown");
    return std::string();
}

#define CHECK(cond) record(static_cast<bool>(cond), __FILE__, __LINE__, #cond)
#define CHECK_EQ(a, b) check_eq((a), (b), #a, #b, __FILE__, __LINE__)
#define CHECK_STATUS(status, ...) \
    check_status((status), #__VA_ARGS__, __FILE__, __LINE__, [&]() { __VA_ARGS__; })
#define CHECK_NOTHROW(...)                                                             \
    do {                                                                               \
        try {                                                                          \
            __VA_ARGS__;                                                               \
            record(true, __FILE__, __LINE__, "");                                      \
        } catch (const std::exception& e_) {                                           \
            record(false, __FILE__, __LINE__, std::string(#__VA_ARGS__) + " threw " + e_.what()); \
        }                                                                              \
    } while (0)

static bool contains(std::string_view hay, std::string_view needle) {
    return hay.find(needle) != std::string_view::npos;
}

#endif
