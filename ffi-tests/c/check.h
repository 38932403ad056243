/* check.h: the check macros the C test programs share (one program per .c file, so
 * the counters and helpers are file-local). Counters are atomic: threads check too.
 *
 * CHECK(cond)                 one condition
 * OK(call)                    the call returns TARN_OK
 * FAILS(status, call)         the call returns `status` and sets a non-empty last error
 * FAILS_SAYING(status, t, c)  ... and the last error contains `t`
 * FAILS_NULL(name, call)      TARN_NULL_ARGUMENT, and the message names the argument
 * JSON(s)                     a C string as the (pointer, length) JSON argument pair
 * check_summary()             prints "N passed, M failed"; the exit code for main
 * POISON(x) / POISONED(x)     fill an out-parameter with 0xAA / check it is untouched
 * SENTINEL                    a value to pre-fill integer out-parameters with
 */
#ifndef TARN_FFI_TESTS_CHECK_H
#define TARN_FFI_TESTS_CHECK_H

#include "tarn.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>


static atomic_int passed;
static atomic_int failed;

static bool check_at(bool ok, const char *file, int line, const char *what)
{
    if (ok) {
        atomic_fetch_add(&passed, 1);
        return true;
    }
    atomic_fetch_add(&failed, 1);
    fprintf(stdout, "%s:%d: FAILED: %s\n    tarn_last_error(): \"%s\"\n", file, line, what,
            tarn_last_error());
    return false;
}

/* Variadic, so that a compound literal with commas can be part of the argument. */
#define CHECK(...) check_at((__VA_ARGS__), __FILE__, __LINE__, #__VA_ARGS__)


/* The call returned `want`; when `want` is a failure, tarn_last_error() is not empty
 * and, if `mention` is not NULL, contains it. */
static bool status_at(tarn_status got, tarn_status want, const char *mention,
                      const char *file, int line, const char *call)
{
    const char *msg = tarn_last_error();
    bool has_msg = msg != NULL && msg[0] != '\0';
    bool mentions = mention == NULL || (msg != NULL && strstr(msg, mention) != NULL);
    bool ok = got == want && (want == TARN_OK || (has_msg && mentions));
    if (ok) {
        atomic_fetch_add(&passed, 1);
        return true;
    }
    atomic_fetch_add(&failed, 1);
    fprintf(stdout, "%s:%d: FAILED: %s\n    returned %s (%d), expected %s (%d)%s\n"
                    "    tarn_last_error(): \"%s\"\n",
            file, line, call, tarn_status_name((int32_t)got), (int)got,
            tarn_status_name((int32_t)want), (int)want,
            got != want ? ""
            : !has_msg  ? "; but tarn_last_error() is empty"
                        : "; but tarn_last_error() does not name the argument",
            msg != NULL ? msg : "(NULL)");
    return false;
}

#define OK(...) status_at((__VA_ARGS__), TARN_OK, NULL, __FILE__, __LINE__, #__VA_ARGS__)
#define FAILS(want, ...) status_at((__VA_ARGS__), (want), NULL, __FILE__, __LINE__, #__VA_ARGS__)
#define FAILS_SAYING(want, text, call) status_at((call), (want), (text), __FILE__, __LINE__, #call)
#define FAILS_NULL(name, call) \
    status_at((call), TARN_NULL_ARGUMENT, (name), __FILE__, __LINE__, #call)

/* A C string as the (pointer, length) JSON argument pair. */
#define JSON(s) (const uint8_t *)(s), strlen(s)

/* Prints the totals; returns main's exit code (non-zero on any failure or no check). */
static int check_summary(void)
{
    int p = atomic_load(&passed);
    int f = atomic_load(&failed);
    printf("%d passed, %d failed\n", p, f);
    return (f == 0 && p > 0) ? 0 : 1;
}

/* Out-parameters are written only on success: tests pre-fill them and check. */
#define SENTINEL UINT64_C(12345)

static inline void poison(void *p, size_t n) { memset(p, 0xAA, n); }

static inline bool poisoned(const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        if (c[i] != 0xAA) {
            return false;
        }
    }
    return true;
}

#define POISON(x) poison(&(x), sizeof(x))
#define POISONED(x) poisoned(&(x), sizeof(x))

#endif
