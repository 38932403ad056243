/*
 * store.c: tarn's JSON document store, used from C.
 *
 * Build and run from the repository root:
 *   cargo build
 *   cc -std=c11 -Iinclude examples/store.c -Ltarget/debug -ltarn -Wl,-rpath,target/debug -o store
 *   ./store
 */
#include "tarn.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Every tarn function returns a status. On failure, say which call failed and why. */
static int failed(const char *what, tarn_status st)
{
    if (st == TARN_OK) {
        return 0;
    }
    fprintf(stderr, "%s failed: %s: %s\n", what, tarn_status_name(st), tarn_last_error());
    return 1;
}

/* JSON goes in as pointer + length. */
static tarn_status put(const tarn_engine *engine, const char *bucket, const char *key,
                       const char *json, const tarn_write_options *options, uint64_t *version)
{
    return tarn_store_write(engine, bucket, key, (const uint8_t *)json, strlen(json), options,
                            version);
}

static int run(const tarn_engine *engine)
{
    uint64_t version = 0;
    if (failed("write", put(engine, "users", "ada", "{\"name\": \"Ada\", \"langs\": [\"Note G\"]}",
                            NULL, &version))) {
        return 1;
    }
    printf("wrote users/ada, version %" PRIu64 "\n", version);

    /* A read returns the bytes exactly as written, plus version and timestamps. JSON
     * comes out in a tarn_buf (not NUL-terminated), which the caller frees. */
    tarn_buf doc;
    tarn_doc_info info;
    if (failed("read", tarn_store_read(engine, "users", "ada", &doc, &info))) {
        return 1;
    }
    printf("read users/ada, version %" PRIu64 ": %.*s\n", info.version, (int)doc.len,
           (const char *)doc.data);
    tarn_buf_free(&doc);

    /* An RFC 6902 patch, applied only if nobody changed the document since our read.
     * Option structs grow at the end between ABI versions: designated initializers
     * leave every field not named (here `meta`, who makes the change) zero. */
    const char *ops = "[{\"op\": \"add\", \"path\": \"/langs/-\", \"value\": \"C\"}]";
    tarn_patch_options if_unchanged = {.flags = TARN_PATCH_IF_VERSION, .if_version = info.version};
    if (failed("patch", tarn_store_patch(engine, "users", "ada", (const uint8_t *)ops,
                                         strlen(ops), &if_unchanged, &version, &doc))) {
        return 1;
    }
    printf("patched users/ada, version %" PRIu64 ": %.*s\n", version, (int)doc.len,
           (const char *)doc.data);
    tarn_buf_free(&doc);

    /* A second document, then the whole bucket, sorted by key. */
    if (failed("write", put(engine, "users", "grace", "{\"name\": \"Grace\"}", NULL, NULL))) {
        return 1;
    }
    tarn_buf list;
    if (failed("list", tarn_store_list(engine, "users", 0, &list))) {
        return 1;
    }
    printf("users: %.*s\n", (int)list.len, (const char *)list.data);
    tarn_buf_free(&list);

    /* Failures are ordinary results: creating a key that already exists. */
    tarn_write_options create = {.flags = TARN_WRITE_FAIL_IF_EXISTS};
    tarn_status st = put(engine, "users", "ada", "{}", &create, NULL);
    if (st != TARN_EXISTS) {
        fprintf(stderr, "expected TARN_EXISTS, got %s\n", tarn_status_name(st));
        return 1;
    }
    printf("create users/ada again: %s (%s)\n", tarn_status_name(st), tarn_last_error());
    return 0;
}

int main(void)
{
    /* A program built against one header must not run with a library of another ABI. */
    if (tarn_abi_version() != TARN_ABI_VERSION) {
        fprintf(stderr, "libtarn has C ABI %" PRIu32 ", this program was built for %d\n",
                tarn_abi_version(), TARN_ABI_VERSION);
        return 1;
    }
    tarn_engine *engine = NULL;
    if (failed("tarn_engine_new", tarn_engine_new(&engine))) {
        return 1;
    }
    printf("tarn %s\n", tarn_version());
    int rc = run(engine);
    tarn_engine_free(engine); /* closes the engine and releases it */
    return rc;
}
