/*
 * libFuzzer target for the parsers provend runs on untrusted bytes besides
 * the frame decoder: the storage scope of every kv.* / sql.* op, the
 * in-place reader of plain kv.get / kv.set frames, the NSM device's
 * response, cron expressions and a package's schedules, and audit log
 * entries.  The first byte picks the parser.
 */

#include <stdlib.h>
#include <string.h>

#include "proven.h"
#include "attest/provider.h"
#include "apps/schedule.h"
#include "storage/storage.h"


static void
fuzz_scope(const uint8_t *data, size_t size)
{
    char              err[PROVEN_ERR_LEN], canonical[1024];
    size_t            len;
    cbor_item_t      *item;
    provend_scope_t   scope;

    item = proven_cbor_load(data, size, err, sizeof(err));
    if (item == NULL) {
        return;
    }

    if (provend_scope_parse(item, &scope, err, sizeof(err)) == PROVEN_OK) {
        (void) provend_scope_canonical(&scope, "kv-bytes", "default",
                                       canonical, sizeof(canonical), &len);
    }

    cbor_decref(&item);
}


static void
fuzz_nsm_response(const uint8_t *data, size_t size)
{
    char      err[PROVEN_ERR_LEN];
    size_t    len;
    uint8_t  *doc;

    doc = NULL;
    if (provend_nsm_response_decode(data, size, &doc, &len, err, sizeof(err))
        == PROVEN_OK)
    {
        free(doc);
    }
}


/* What the fast path takes on trust from a parse that succeeded. */
static void
fuzz_kv_plain(const uint8_t *data, size_t size)
{
    char                canonical[1024];
    size_t              len;
    provend_kv_plain_t  f;

    if (provend_kv_plain_parse(data, size, &f) != PROVEN_OK) {
        return;
    }

    if (f.key < data || f.key_len == 0 || f.key_len > PROVEND_KV_KEY_MAX
        || f.key + f.key_len > data + size
        || (f.set && (f.value < data || f.value + f.value_len > data + size))
        || provend_scope_canonical(&f.scope, "kv-bytes", f.store, canonical,
                                   sizeof(canonical), &len) != PROVEN_OK)
    {
        abort();
    }
}


/* A cron expression; one that parses must give a non-empty minute set. */
static void
fuzz_cron(const uint8_t *data, size_t size)
{
    char            expr[256], err[PROVEN_ERR_LEN];
    provend_cron_t  cron;

    if (size >= sizeof(expr)) {
        return;
    }
    memcpy(expr, data, size);
    expr[size] = '\0';

    if (provend_cron_parse(expr, &cron, err, sizeof(err)) == PROVEN_OK
        && (cron.minutes == 0 || cron.hours == 0 || cron.months == 0))
    {
        abort();
    }
}


static void
fuzz_schedules(const uint8_t *data, size_t size)
{
    char             err[PROVEN_ERR_LEN];
    size_t           n;
    cbor_item_t     *pkg;
    provend_cron_t  *list;

    pkg = proven_cbor_load(data, size, err, sizeof(err));
    if (pkg == NULL) {
        return;
    }
    if (cbor_isa_map(pkg)
        && provend_schedules_of(proven_cbor_map_get(pkg, "handlers"), &list,
                                &n, err, sizeof(err)) == PROVEN_OK)
    {
        free(list);
    }
    cbor_decref(&pkg);
}


/* An audit entry that decodes encodes back to the very same bytes. */
static void
fuzz_audit(const uint8_t *data, size_t size)
{
    char                  err[PROVEN_ERR_LEN];
    size_t                len;
    uint8_t               again[PROVEN_AUDIT_ENTRY_MAX];
    proven_audit_entry_t  e;

    if (proven_audit_decode(data, size, &e, err, sizeof(err)) != PROVEN_OK) {
        return;
    }
    if (proven_audit_encode(&e, again, sizeof(again), &len) != PROVEN_OK
        || len != size || memcmp(again, data, size) != 0)
    {
        abort();
    }
    (void) proven_audit_verify(&e, err, sizeof(err));
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }

    switch (data[0] % 6) {
    case 0:
        fuzz_nsm_response(data + 1, size - 1);
        break;
    case 1:
        fuzz_scope(data + 1, size - 1);
        break;
    case 2:
        fuzz_kv_plain(data + 1, size - 1);
        break;
    case 3:
        fuzz_cron(data + 1, size - 1);
        break;
    case 4:
        fuzz_schedules(data + 1, size - 1);
        break;
    default:
        fuzz_audit(data + 1, size - 1);
        break;
    }

    return 0;
}
