/*
 * provend storage: scopes, the embedded backend through the backend
 * interface (in process), and a few ops over provend's socket (the built
 * daemon, build/bin/provend next to this test's directory, or $PROVEND_BIN).
 */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <sqlite3.h>

#include "proven.h"
#include "core/keys.h"
#include "storage/storage.h"
#include "storage/vfs.h"
#include "support.h"


#define TEST_KV_MAX      4096
#define TEST_TIMEOUT_MS  300
#define IO_TIMEOUT_MS    10000

static char                top_dir[64];
static char                data_dir[128];
static char                provend_bin[PATH_MAX];
static uint8_t             master[PROVEND_KEY_LEN];
static provend_storage_t  *st;


/* ---- helpers: the backend ------------------------------------------------ */

static void
backend_open(void)
{
    char                      err[PROVEN_ERR_LEN];
    provend_storage_config_t  cfg;

    memset(&cfg, 0, sizeof(cfg));
    cfg.data_dir = data_dir;
    cfg.master_key = master;
    cfg.kv_max_value = TEST_KV_MAX;
    cfg.sql_timeout_ms = TEST_TIMEOUT_MS;

    st = provend_storage_sqlite_open(&cfg, err, sizeof(err));
    if (st == NULL) {
        fail_msg("open: %s", err);
    }
}


static void
app_scope(provend_scope_t *s, const char *app)
{
    memset(s, 0, sizeof(*s));
    s->kind = PROVEND_SCOPE_APP;
    snprintf(s->app, sizeof(s->app), "%s", app);
}


static uint8_t *
dup_bytes(const void *p, size_t len)
{
    uint8_t  *out;

    out = malloc(len ? len : 1);
    assert_non_null(out);
    memcpy(out, p, len);
    return out;
}


static provend_storage_req_t *
kv_req(provend_storage_op_t op, const provend_scope_t *scope,
    provend_kv_type_t type, const char *key)
{
    provend_storage_req_t  *r;

    r = provend_storage_req_new(op);
    assert_non_null(r);
    r->scope = *scope;
    r->type = type;

    if (key != NULL) {
        r->key = dup_bytes(key, strlen(key));
        r->key_len = strlen(key);
    }

    return r;
}


static void
set_value(provend_storage_req_t *r, const void *value, size_t len)
{
    r->value = dup_bytes(value, len);
    r->value_len = len;
}


static uint64_t
result_uint(provend_storage_req_t *r, const char *name)
{
    uint64_t      v;
    cbor_item_t  *item;

    item = proven_cbor_map_get(r->result, name);
    assert_non_null(item);
    assert_int_equal(proven_cbor_uint(item, &v), PROVEN_OK);
    return v;
}


/* kv.set of text (bytes store unless type says otherwise): revision. */
static uint64_t
kv_set(const provend_scope_t *scope, provend_kv_type_t type,
    const char *key, const char *value)
{
    uint64_t                rev;
    provend_storage_req_t  *r;

    r = kv_req(PROVEND_OP_KV_SET, scope, type, key);
    set_value(r, value, strlen(value));
    if (provend_storage_call(st, r) != PROVEND_ST_OK) {
        fail_msg("kv.set %s: %s", key, r->error);
    }
    rev = r->revision;
    provend_storage_req_free(r);
    return rev;
}


/* kv.get: the value as a NUL terminated copy or NULL; *rev. */
static char *
kv_get(const provend_scope_t *scope, provend_kv_type_t type,
    const char *key, uint64_t *rev)
{
    char                   *out;
    cbor_item_t            *v;
    provend_storage_req_t  *r;

    r = kv_req(PROVEND_OP_KV_GET, scope, type, key);
    if (provend_storage_call(st, r) != PROVEND_ST_OK) {
        fail_msg("kv.get %s: %s", key, r->error);
    }

    *rev = result_uint(r, "revision");
    v = proven_cbor_map_get(r->result, "value");
    assert_non_null(v);
    out = NULL;

    if (!proven_cbor_is_null(v)) {
        if (type == PROVEND_KV_STRING) {
            assert_true(cbor_isa_string(v));
            out = strndup((char *) cbor_string_handle(v),
                          cbor_string_length(v));
        } else {
            assert_true(cbor_isa_bytestring(v));
            out = strndup((char *) cbor_bytestring_handle(v),
                          cbor_bytestring_length(v));
        }
        assert_non_null(out);
    }

    provend_storage_req_free(r);
    return out;
}


static void
expect_kv(const provend_scope_t *scope, const char *key,
    const char *value, uint64_t revision)
{
    char      *got;
    uint64_t   rev;

    got = kv_get(scope, PROVEND_KV_BYTES, key, &rev);
    if (value == NULL) {
        assert_null(got);
    } else {
        assert_non_null(got);
        assert_string_equal(got, value);
    }
    assert_int_equal(rev, revision);
    free(got);
}


static provend_storage_req_t *
sql_req(provend_storage_op_t op, const provend_scope_t *scope,
    size_t n, const char *const *sql)
{
    size_t                  i;
    provend_storage_req_t  *r;

    r = provend_storage_req_new(op);
    assert_non_null(r);
    r->scope = *scope;
    r->stmts = calloc(n ? n : 1, sizeof(*r->stmts));
    assert_non_null(r->stmts);
    r->nstmts = n;

    for (i = 0; i < n; i++) {
        r->stmts[i].sql = strdup(sql[i]);
        assert_non_null(r->stmts[i].sql);
        r->stmts[i].sql_len = strlen(sql[i]);
    }

    return r;
}


static void
add_param(provend_sql_stmt_t *s, provend_sql_type_t type, int64_t i,
    double f, const char *text)
{
    provend_sql_value_t  *v;

    s->params = realloc(s->params, (s->nparams + 1) * sizeof(*s->params));
    assert_non_null(s->params);
    v = &s->params[s->nparams++];
    memset(v, 0, sizeof(*v));
    v->type = type;
    v->i = i;
    v->f = f;
    if (text != NULL) {
        v->data = dup_bytes(text, strlen(text) + 1);
        v->len = strlen(text);
    }
}


/* Runs one statement; its status, error text in msg (if not NULL). */
static provend_storage_status_t
sql_one(provend_storage_op_t op, const provend_scope_t *scope,
    const char *sql, char *msg, size_t msglen)
{
    provend_storage_status_t  status;
    provend_storage_req_t    *r;

    r = sql_req(op, scope, 1, &sql);
    status = provend_storage_call(st, r);
    if (msg != NULL) {
        snprintf(msg, msglen, "%s", r->error);
    }
    provend_storage_req_free(r);
    return status;
}


static void
sql_ok(const provend_scope_t *scope, const char *sql)
{
    char  msg[PROVEN_ERR_LEN];

    if (sql_one(PROVEND_OP_SQL_EXECUTE, scope, sql, msg, sizeof(msg))
        != PROVEND_ST_OK)
    {
        fail_msg("%s: %s", sql, msg);
    }
}


/* The single integer a query returns. */
static int64_t
sql_int(const provend_scope_t *scope, const char *sql)
{
    int64_t                 v;
    cbor_item_t            *rows, *row;
    provend_storage_req_t  *r;

    r = sql_req(PROVEND_OP_SQL_QUERY, scope, 1, &sql);
    if (provend_storage_call(st, r) != PROVEND_ST_OK) {
        fail_msg("%s: %s", sql, r->error);
    }

    rows = proven_cbor_map_get(r->result, "rows");
    assert_int_equal(cbor_array_size(rows), 1);
    row = cbor_array_handle(rows)[0];
    assert_true(cbor_isa_uint(cbor_array_handle(row)[0]));
    v = (int64_t) cbor_get_int(cbor_array_handle(row)[0]);
    provend_storage_req_free(r);
    return v;
}


/* ---- scopes -------------------------------------------------------------- */

static cbor_item_t *
scope_map(const char *app, const char *kind, const char *identity,
    const char *chain, const char *contract, const char *token)
{
    cbor_item_t  *m, *nft;

    m = cbor_new_definite_map(4);
    assert_non_null(m);

    if (app != NULL) {
        assert_int_equal(proven_cbor_map_put(m, "app",
                                             cbor_build_string(app)),
                         PROVEN_OK);
    }
    if (kind != NULL) {
        assert_int_equal(proven_cbor_map_put(m, "kind",
                                             cbor_build_string(kind)),
                         PROVEN_OK);
    }
    if (identity != NULL) {
        assert_int_equal(proven_cbor_map_put(m, "identity",
                                             cbor_build_string(identity)),
                         PROVEN_OK);
    }
    if (chain != NULL) {
        nft = cbor_new_definite_map(4);
        assert_non_null(nft);
        assert_int_equal(proven_cbor_map_put(nft, "chain",
                                             cbor_build_string(chain)),
                         PROVEN_OK);
        if (contract != NULL) {
            assert_int_equal(proven_cbor_map_put(nft, "contract",
                                              cbor_build_string(contract)),
                             PROVEN_OK);
        }
        if (token != NULL) {
            assert_int_equal(proven_cbor_map_put(nft, "token",
                                                 cbor_build_string(token)),
                             PROVEN_OK);
        }
        assert_int_equal(proven_cbor_map_put(m, "nft", nft), PROVEN_OK);
    }

    return m;
}


static int
parse(cbor_item_t *m, provend_scope_t *s)
{
    int   rc;
    char  err[PROVEN_ERR_LEN];

    rc = provend_scope_parse(m, s, err, sizeof(err));
    cbor_decref(&m);
    return rc;
}


static void
test_scope_rules(void **state)
{
    char             long_app[70], long_id[140], long_token[140];
    cbor_item_t     *m;
    provend_scope_t  s;

    (void) state;

    memset(long_app, 'a', 65);
    long_app[65] = '\0';
    memset(long_id, 'i', 129);
    long_id[129] = '\0';
    memset(long_token, '1', 131);
    long_token[131] = '\0';

    /* app */
    assert_int_equal(parse(scope_map("demo", NULL, NULL, NULL, NULL, NULL),
                           &s), PROVEN_OK);
    assert_int_equal(s.kind, PROVEND_SCOPE_APP);
    assert_string_equal(s.app, "demo");
    assert_int_equal(parse(scope_map("my_app-2", "app", NULL, NULL, NULL,
                                     NULL), &s), PROVEN_OK);
    assert_int_equal(parse(scope_map("Demo", NULL, NULL, NULL, NULL, NULL),
                           &s), PROVEN_ERR);
    assert_int_equal(parse(scope_map("a.b", NULL, NULL, NULL, NULL, NULL),
                           &s), PROVEN_ERR);
    assert_int_equal(parse(scope_map("a|b", NULL, NULL, NULL, NULL, NULL),
                           &s), PROVEN_ERR);
    assert_int_equal(parse(scope_map("", NULL, NULL, NULL, NULL, NULL),
                           &s), PROVEN_ERR);
    assert_int_equal(parse(scope_map(long_app, NULL, NULL, NULL, NULL,
                                     NULL), &s), PROVEN_ERR);
    long_app[64] = '\0';
    assert_int_equal(parse(scope_map(long_app, NULL, NULL, NULL, NULL,
                                     NULL), &s), PROVEN_OK);
    assert_int_equal(parse(scope_map(NULL, "app", NULL, NULL, NULL, NULL),
                           &s), PROVEN_ERR);
    assert_int_equal(parse(scope_map("a", "team", NULL, NULL, NULL, NULL),
                           &s), PROVEN_ERR);
    assert_int_equal(parse(scope_map("a", "app", "alice", NULL, NULL, NULL),
                           &s), PROVEN_ERR);
    assert_int_equal(parse(scope_map("a", "app", NULL, "eth", "0x1", "1"),
                           &s), PROVEN_ERR);

    /* personal */
    assert_int_equal(parse(scope_map("a", "personal", "Alice/B",
                                     NULL, NULL, NULL), &s), PROVEN_ERR);
    assert_int_equal(parse(scope_map("a", "personal", "Alice.B:c@d-e_",
                                     NULL, NULL, NULL), &s), PROVEN_OK);
    assert_int_equal(s.kind, PROVEND_SCOPE_PERSONAL);
    assert_string_equal(s.identity, "Alice.B:c@d-e_");
    assert_int_equal(parse(scope_map("a", "personal", NULL, NULL, NULL,
                                     NULL), &s), PROVEN_ERR);
    assert_int_equal(parse(scope_map("a", "personal", "a b", NULL, NULL,
                                     NULL), &s), PROVEN_ERR);
    assert_int_equal(parse(scope_map("a", "personal", "b|c", NULL, NULL,
                                     NULL), &s), PROVEN_ERR);
    assert_int_equal(parse(scope_map("a", "personal", long_id, NULL, NULL,
                                     NULL), &s), PROVEN_ERR);
    assert_int_equal(parse(scope_map("a", "personal", "x", "eth", "c", "1"),
                           &s), PROVEN_ERR);

    /* nft */
    assert_int_equal(parse(scope_map("a", "nft", NULL, "eth-main",
                                     "0xABCdef01", "007"), &s), PROVEN_OK);
    assert_int_equal(s.kind, PROVEND_SCOPE_NFT);
    assert_string_equal(s.contract, "0xabcdef01");
    assert_string_equal(s.token, "7");
    assert_int_equal(parse(scope_map("a", "nft", NULL, "sol", "Mint.X:y_Z",
                                     "000"), &s), PROVEN_OK);
    assert_string_equal(s.contract, "Mint.X:y_Z");
    assert_string_equal(s.token, "0");
    /* a Radix non-fungible: its id in its one text form */
    {
        static const char *const  good[] = { "#0#", "#12#",
            "#18446744073709551615#", "<Gold_1>", "[00ff]",
            "{0123456789abcdef-0123456789abcdef-0123456789abcdef-"
            "0123456789abcdef}", NULL };
        static const char *const  bad[] = { "#012#", "#18446744073709551616#",
            "#1", "7", "<>", "<a b>", "[0F]", "[0]", "[]",
            "{0123456789abcdef-0123456789abcdef-0123456789abcdef}", "", NULL };
        const char *const        *id;

        for (id = good; *id != NULL; id++) {
            assert_int_equal(parse(scope_map("a", "nft", NULL, "radix-1",
                                             "resource_rdx1x", *id), &s),
                             PROVEN_OK);
            assert_string_equal(s.token, *id);
        }
        for (id = bad; *id != NULL; id++) {
            assert_int_equal(parse(scope_map("a", "nft", NULL, "radix-1",
                                             "resource_rdx1x", *id), &s),
                             PROVEN_ERR);
        }
        /* an Ethereum scope's token stays decimal */
        assert_int_equal(parse(scope_map("a", "nft", NULL, "eth-1", "0xab",
                                         "#1#"), &s), PROVEN_ERR);
    }
    assert_int_equal(parse(scope_map("a", "nft", NULL, "ETH", "c", "1"),
                           &s), PROVEN_ERR);
    assert_int_equal(parse(scope_map("a", "nft", NULL, "eth", "c d", "1"),
                           &s), PROVEN_ERR);
    assert_int_equal(parse(scope_map("a", "nft", NULL, "eth", "c", "-1"),
                           &s), PROVEN_ERR);
    assert_int_equal(parse(scope_map("a", "nft", NULL, "eth", "c", "0x1"),
                           &s), PROVEN_ERR);
    assert_int_equal(parse(scope_map("a", "nft", NULL, "eth", "c",
                                     long_token), &s), PROVEN_ERR);
    assert_int_equal(parse(scope_map("a", "nft", NULL, "eth", "c", NULL),
                           &s), PROVEN_ERR);
    assert_int_equal(parse(scope_map("a", "nft", NULL, NULL, NULL, NULL),
                           &s), PROVEN_ERR);
    assert_int_equal(parse(scope_map("a", "nft", "x", "eth", "c", "1"),
                           &s), PROVEN_ERR);

    /* not a map, unknown fields */
    m = cbor_build_string("demo");
    assert_int_equal(parse(m, &s), PROVEN_ERR);
    m = scope_map("a", NULL, NULL, NULL, NULL, NULL);
    assert_int_equal(proven_cbor_map_put(m, "extra", cbor_build_uint8(1)),
                     PROVEN_OK);
    assert_int_equal(parse(m, &s), PROVEN_ERR);
    m = scope_map("a", "nft", NULL, "eth", "c", "1");
    assert_int_equal(proven_cbor_map_put(cbor_map_handle(m)[2].value, "x",
                                         cbor_build_uint8(1)), PROVEN_OK);
    assert_int_equal(parse(m, &s), PROVEN_ERR);
}


static void
test_scope_canonical_unique(void **state)
{
    char             canon[12][PROVEND_SCOPE_CANON_MAX];
    size_t           i, j, n;
    provend_scope_t  s[6];

    (void) state;

    assert_int_equal(parse(scope_map("a", NULL, NULL, NULL, NULL, NULL),
                           &s[0]), PROVEN_OK);
    assert_int_equal(parse(scope_map("a", "personal", "b", NULL, NULL,
                                     NULL), &s[1]), PROVEN_OK);
    assert_int_equal(parse(scope_map("a", "personal", "b:c", NULL, NULL,
                                     NULL), &s[2]), PROVEN_OK);
    assert_int_equal(parse(scope_map("a", "nft", NULL, "b", "c", "1"),
                           &s[3]), PROVEN_OK);
    assert_int_equal(parse(scope_map("a", "nft", NULL, "b", "c:1", "1"),
                           &s[4]), PROVEN_OK);
    assert_int_equal(parse(scope_map("a-b", NULL, NULL, NULL, NULL, NULL),
                           &s[5]), PROVEN_OK);

    n = 0;
    for (i = 0; i < 6; i++) {
        assert_int_equal(provend_scope_canonical(&s[i], "kv-bytes", "c",
                                                 canon[n++],
                                                 sizeof(canon[0]), NULL),
                         PROVEN_OK);
        assert_int_equal(provend_scope_canonical(&s[i], "sql", "default",
                                                 canon[n++],
                                                 sizeof(canon[0]), NULL),
                         PROVEN_OK);
    }

    for (i = 0; i < n; i++) {
        for (j = i + 1; j < n; j++) {
            assert_string_not_equal(canon[i], canon[j]);
        }
    }

    assert_string_equal(canon[2], "v1|app:1:a|personal:1:b|kv-bytes:1:c");

    /* Store names follow the same rules as app names. */
    assert_int_equal(provend_scope_canonical(&s[0], "kv-bytes", "B", canon[0],
                                             sizeof(canon[0]), NULL),
                     PROVEN_ERR);
    assert_int_equal(provend_scope_canonical(&s[0], "kv-bytes", "", canon[0],
                                             sizeof(canon[0]), NULL),
                     PROVEN_ERR);
}


/* ---- KV ------------------------------------------------------------------ */

static void
test_kv_basic(void **state)
{
    provend_scope_t         s;
    provend_storage_req_t  *r;

    (void) state;
    app_scope(&s, "basic");

    expect_kv(&s, "k", NULL, 0);
    assert_int_equal(kv_set(&s, PROVEND_KV_BYTES, "k", "one"), 1);
    expect_kv(&s, "k", "one", 1);
    assert_int_equal(kv_set(&s, PROVEND_KV_BYTES, "k", "two"), 2);
    expect_kv(&s, "k", "two", 2);

    /* an empty value is a value */
    assert_int_equal(kv_set(&s, PROVEND_KV_BYTES, "e", ""), 1);
    expect_kv(&s, "e", "", 1);

    r = kv_req(PROVEND_OP_KV_DELETE, &s, PROVEND_KV_BYTES, "k");
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    assert_true(r->existed);
    provend_storage_req_free(r);

    r = kv_req(PROVEND_OP_KV_DELETE, &s, PROVEND_KV_BYTES, "k");
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    assert_false(r->existed);
    provend_storage_req_free(r);

    expect_kv(&s, "k", NULL, 0);

    /* a set after a delete starts again */
    assert_int_equal(kv_set(&s, PROVEND_KV_BYTES, "k", "three"), 1);
}


static void
test_kv_if_revision(void **state)
{
    provend_scope_t         s;
    provend_storage_req_t  *r;

    (void) state;
    app_scope(&s, "cas");

    /* 0: must not exist */
    r = kv_req(PROVEND_OP_KV_SET, &s, PROVEND_KV_BYTES, "k");
    set_value(r, "a", 1);
    r->has_if_revision = 1;
    r->if_revision = 0;
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    provend_storage_req_free(r);

    r = kv_req(PROVEND_OP_KV_SET, &s, PROVEND_KV_BYTES, "k");
    set_value(r, "b", 1);
    r->has_if_revision = 1;
    r->if_revision = 0;
    assert_int_equal(provend_storage_call(st, r),
                     PROVEND_ST_REVISION_MISMATCH);
    provend_storage_req_free(r);

    r = kv_req(PROVEND_OP_KV_SET, &s, PROVEND_KV_BYTES, "k");
    set_value(r, "c", 1);
    r->has_if_revision = 1;
    r->if_revision = 1;
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    assert_int_equal(r->revision, 2);
    provend_storage_req_free(r);

    r = kv_req(PROVEND_OP_KV_SET, &s, PROVEND_KV_BYTES, "k");
    set_value(r, "d", 1);
    r->has_if_revision = 1;
    r->if_revision = 1;
    assert_int_equal(provend_storage_call(st, r),
                     PROVEND_ST_REVISION_MISMATCH);
    provend_storage_req_free(r);

    r = kv_req(PROVEND_OP_KV_DELETE, &s, PROVEND_KV_BYTES, "k");
    r->has_if_revision = 1;
    r->if_revision = 1;
    assert_int_equal(provend_storage_call(st, r),
                     PROVEND_ST_REVISION_MISMATCH);
    provend_storage_req_free(r);

    expect_kv(&s, "k", "c", 2);

    r = kv_req(PROVEND_OP_KV_DELETE, &s, PROVEND_KV_BYTES, "k");
    r->has_if_revision = 1;
    r->if_revision = 2;
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    provend_storage_req_free(r);

    expect_kv(&s, "k", NULL, 0);
}


/* Pages of kv.keys with prefix and limit; every key once, in order. */
static void
test_kv_keys_cursor(void **state)
{
    int                     pages;
    char                    key[32], *cursor;
    size_t                  i, seen;
    cbor_item_t            *keys, *c, *k;
    provend_scope_t         s;
    provend_storage_req_t  *r;

    (void) state;
    app_scope(&s, "keys");

    for (i = 0; i < 25; i++) {
        snprintf(key, sizeof(key), "user:%02zu", i);
        kv_set(&s, PROVEND_KV_BYTES, key, "x");
    }
    kv_set(&s, PROVEND_KV_BYTES, "other", "x");
    kv_set(&s, PROVEND_KV_BYTES, "userz", "x");
    kv_set(&s, PROVEND_KV_BYTES, "\xff\x01", "x");

    cursor = NULL;
    seen = 0;
    pages = 0;

    do {
        r = kv_req(PROVEND_OP_KV_KEYS, &s, PROVEND_KV_BYTES, NULL);
        r->prefix = dup_bytes("user:", 5);
        r->prefix_len = 5;
        r->limit = 10;
        r->cursor = cursor;
        assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);

        keys = proven_cbor_map_get(r->result, "keys");
        for (i = 0; i < cbor_array_size(keys); i++) {
            k = cbor_array_handle(keys)[i];
            assert_true(cbor_isa_string(k));
            snprintf(key, sizeof(key), "user:%02zu", seen);
            assert_int_equal(cbor_string_length(k), strlen(key));
            assert_memory_equal(cbor_string_handle(k), key, strlen(key));
            seen++;
        }

        c = proven_cbor_map_get(r->result, "cursor");
        cursor = proven_cbor_is_null(c)
                 ? NULL : strndup((char *) cbor_string_handle(c),
                                  cbor_string_length(c));
        provend_storage_req_free(r);
        pages++;
    } while (cursor != NULL && pages < 10);

    assert_int_equal(seen, 25);
    assert_int_equal(pages, 3);

    /* no prefix: all keys; the binary one as bytes, last */
    r = kv_req(PROVEND_OP_KV_KEYS, &s, PROVEND_KV_BYTES, NULL);
    r->limit = 1000;
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    keys = proven_cbor_map_get(r->result, "keys");
    assert_int_equal(cbor_array_size(keys), 28);
    assert_true(cbor_isa_bytestring(cbor_array_handle(keys)[27]));
    assert_true(proven_cbor_is_null(proven_cbor_map_get(r->result,
                                                        "cursor")));
    provend_storage_req_free(r);

    /* a bad cursor */
    r = kv_req(PROVEND_OP_KV_KEYS, &s, PROVEND_KV_BYTES, NULL);
    r->cursor = strdup("zz");
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_BAD_REQUEST);
    provend_storage_req_free(r);
}


/* Store types are separate stores; values keep their type. */
static void
test_kv_types(void **state)
{
    char                   *v;
    uint64_t                rev;
    provend_scope_t         s;
    provend_storage_req_t  *r;

    (void) state;
    app_scope(&s, "types");

    kv_set(&s, PROVEND_KV_STRING, "k", "text");
    v = kv_get(&s, PROVEND_KV_STRING, "k", &rev);
    assert_string_equal(v, "text");
    free(v);

    expect_kv(&s, "k", NULL, 0);

    /* a string or bytes set needs a value */
    r = kv_req(PROVEND_OP_KV_SET, &s, PROVEND_KV_STRING, "k");
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_BAD_REQUEST);
    provend_storage_req_free(r);

    /* kv.sign on a bytes key that does not exist in the key store */
    kv_set(&s, PROVEND_KV_BYTES, "b", "x");
    r = kv_req(PROVEND_OP_KV_SIGN, &s, PROVEND_KV_BYTES, "b");
    r->message = dup_bytes("m", 1);
    r->message_len = 1;
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_NOT_FOUND);
    provend_storage_req_free(r);
}


static void
test_kv_keystore(void **state)
{
    size_t                  publen;
    uint8_t                 pub[32], seed[32];
    EVP_PKEY               *pkey;
    EVP_MD_CTX             *ctx;
    cbor_item_t            *item, *sig;
    provend_scope_t         s;
    provend_storage_req_t  *r;

    (void) state;
    app_scope(&s, "keystore");

    /* generated */
    r = kv_req(PROVEND_OP_KV_SET, &s, PROVEND_KV_KEY, "signer");
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    assert_int_equal(r->revision, 1);
    provend_storage_req_free(r);

    r = kv_req(PROVEND_OP_KV_GET, &s, PROVEND_KV_KEY, "signer");
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    assert_null(proven_cbor_map_get(r->result, "value"));
    item = proven_cbor_map_get(r->result, "public_key");
    assert_non_null(item);
    assert_int_equal(cbor_bytestring_length(item), 32);
    memcpy(pub, cbor_bytestring_handle(item), 32);
    assert_int_equal(cbor_map_size(r->result), 2);
    provend_storage_req_free(r);

    r = kv_req(PROVEND_OP_KV_SIGN, &s, PROVEND_KV_KEY, "signer");
    r->message = dup_bytes("hello", 5);
    r->message_len = 5;
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    sig = proven_cbor_map_get(r->result, "signature");
    assert_non_null(sig);
    assert_int_equal(cbor_bytestring_length(sig), 64);

    pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, 32);
    ctx = EVP_MD_CTX_new();
    assert_non_null(pkey);
    assert_non_null(ctx);
    assert_int_equal(EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pkey), 1);
    assert_int_equal(EVP_DigestVerify(ctx, cbor_bytestring_handle(sig), 64,
                                      (const uint8_t *) "hello", 5), 1);
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    provend_storage_req_free(r);

    /* imported seed: the public key is the seed's */
    memset(seed, 7, sizeof(seed));
    r = kv_req(PROVEND_OP_KV_SET, &s, PROVEND_KV_KEY, "imported");
    set_value(r, seed, sizeof(seed));
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    provend_storage_req_free(r);

    pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
    publen = sizeof(pub);
    assert_int_equal(EVP_PKEY_get_raw_public_key(pkey, pub, &publen), 1);
    EVP_PKEY_free(pkey);

    r = kv_req(PROVEND_OP_KV_GET, &s, PROVEND_KV_KEY, "imported");
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    item = proven_cbor_map_get(r->result, "public_key");
    assert_memory_equal(cbor_bytestring_handle(item), pub, 32);
    provend_storage_req_free(r);

    /* a seed of the wrong size; a message too long; a missing key */
    r = kv_req(PROVEND_OP_KV_SET, &s, PROVEND_KV_KEY, "bad");
    set_value(r, seed, 31);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_BAD_REQUEST);
    provend_storage_req_free(r);

    r = kv_req(PROVEND_OP_KV_SIGN, &s, PROVEND_KV_KEY, "signer");
    r->message = calloc(1, PROVEND_KV_SIGN_MAX + 1);
    r->message_len = PROVEND_KV_SIGN_MAX + 1;
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_BAD_REQUEST);
    provend_storage_req_free(r);

    r = kv_req(PROVEND_OP_KV_SIGN, &s, PROVEND_KV_KEY, "missing");
    r->message = dup_bytes("m", 1);
    r->message_len = 1;
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_NOT_FOUND);
    provend_storage_req_free(r);
}


static void
test_kv_limits(void **state)
{
    char                    key[PROVEND_KV_KEY_MAX + 2];
    uint8_t                *big;
    provend_scope_t         s;
    provend_storage_req_t  *r;

    (void) state;
    app_scope(&s, "limits");

    memset(key, 'k', sizeof(key));
    key[PROVEND_KV_KEY_MAX + 1] = '\0';
    r = kv_req(PROVEND_OP_KV_SET, &s, PROVEND_KV_BYTES, key);
    set_value(r, "v", 1);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_BAD_REQUEST);
    provend_storage_req_free(r);

    key[PROVEND_KV_KEY_MAX] = '\0';
    kv_set(&s, PROVEND_KV_BYTES, key, "v");

    big = calloc(1, TEST_KV_MAX + 1);
    assert_non_null(big);

    r = kv_req(PROVEND_OP_KV_SET, &s, PROVEND_KV_BYTES, "big");
    set_value(r, big, TEST_KV_MAX + 1);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_BAD_REQUEST);
    provend_storage_req_free(r);

    r = kv_req(PROVEND_OP_KV_SET, &s, PROVEND_KV_BYTES, "big");
    set_value(r, big, TEST_KV_MAX);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    provend_storage_req_free(r);
    free(big);

    r = kv_req(PROVEND_OP_KV_GET, &s, PROVEND_KV_BYTES, "");
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_BAD_REQUEST);
    provend_storage_req_free(r);

    r = kv_req(PROVEND_OP_KV_KEYS, &s, PROVEND_KV_BYTES, NULL);
    r->limit = PROVEND_KV_LIMIT_MAX + 1;
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_BAD_REQUEST);
    provend_storage_req_free(r);

    r = kv_req(PROVEND_OP_KV_GET, &s, PROVEND_KV_BYTES, "k");
    snprintf(r->name, sizeof(r->name), "Bad");
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_BAD_REQUEST);
    provend_storage_req_free(r);
}


static void
test_kv_isolation(void **state)
{
    provend_scope_t  a, b, p1, p2, n1, n2, store;

    (void) state;

    app_scope(&a, "iso-a");
    app_scope(&b, "iso-b");
    p1 = a;
    p1.kind = PROVEND_SCOPE_PERSONAL;
    snprintf(p1.identity, sizeof(p1.identity), "alice");
    p2 = p1;
    snprintf(p2.identity, sizeof(p2.identity), "bob");
    n1 = a;
    n1.kind = PROVEND_SCOPE_NFT;
    snprintf(n1.chain, sizeof(n1.chain), "eth");
    snprintf(n1.contract, sizeof(n1.contract), "0xabc");
    snprintf(n1.token, sizeof(n1.token), "1");
    n2 = n1;
    snprintf(n2.token, sizeof(n2.token), "2");

    kv_set(&a, PROVEND_KV_BYTES, "k", "a");
    kv_set(&p1, PROVEND_KV_BYTES, "k", "alice");
    kv_set(&n1, PROVEND_KV_BYTES, "k", "nft1");

    expect_kv(&a, "k", "a", 1);
    expect_kv(&b, "k", NULL, 0);
    expect_kv(&p1, "k", "alice", 1);
    expect_kv(&p2, "k", NULL, 0);
    expect_kv(&n1, "k", "nft1", 1);
    expect_kv(&n2, "k", NULL, 0);

    /* another store of the same scope */
    store = a;
    {
        char                   *v;
        uint64_t                rev;
        provend_storage_req_t  *r;

        r = kv_req(PROVEND_OP_KV_GET, &store, PROVEND_KV_BYTES, "k");
        snprintf(r->name, sizeof(r->name), "other");
        assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
        assert_true(proven_cbor_is_null(proven_cbor_map_get(r->result,
                                                            "value")));
        provend_storage_req_free(r);

        v = kv_get(&a, PROVEND_KV_BYTES, "k", &rev);
        assert_string_equal(v, "a");
        free(v);
    }
}


/* Many writers at once: each answered, every write there afterwards. */
typedef struct {
    int    id;
    int    failures;
} writer_t;


static void *
writer_thread(void *arg)
{
    int                     i;
    char                    key[32], value[32];
    writer_t               *w;
    provend_scope_t         s;
    provend_storage_req_t  *r;

    w = arg;
    app_scope(&s, "concurrent");

    for (i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "w%d-%d", w->id, i);
        snprintf(value, sizeof(value), "v%d", i);
        r = provend_storage_req_new(PROVEND_OP_KV_SET);
        r->scope = s;
        r->key = (uint8_t *) strdup(key);
        r->key_len = strlen(key);
        r->value = (uint8_t *) strdup(value);
        r->value_len = strlen(value);
        if (provend_storage_call(st, r) != PROVEND_ST_OK) {
            w->failures++;
        }
        provend_storage_req_free(r);
    }

    return NULL;
}


static void
test_kv_concurrent(void **state)
{
    int              i, j;
    char             key[32], value[32];
    pthread_t        t[8];
    writer_t         w[8];
    provend_scope_t  s;

    (void) state;

    for (i = 0; i < 8; i++) {
        w[i].id = i;
        w[i].failures = 0;
        assert_int_equal(pthread_create(&t[i], NULL, writer_thread, &w[i]),
                         0);
    }

    for (i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }

    app_scope(&s, "concurrent");
    for (i = 0; i < 8; i++) {
        for (j = 0; j < 100; j += 33) {
            snprintf(key, sizeof(key), "w%d-%d", i, j);
            snprintf(value, sizeof(value), "v%d", j);
            expect_kv(&s, key, value, 1);
        }
    }
}


/* The newest (or oldest) KV log segment: its path, its bytes (malloc()ed). */
static uint8_t *
kv_segment(char *path, size_t pathlen, size_t *len, int newest)
{
    DIR            *dir;
    char            kvdir[256], best[32];
    uint8_t        *data;
    struct stat     sb;
    struct dirent  *de;
    FILE           *f;

    snprintf(kvdir, sizeof(kvdir), "%s/storage/kv", data_dir);
    dir = opendir(kvdir);
    assert_non_null(dir);

    best[0] = '\0';
    while ((de = readdir(dir)) != NULL) {
        if (strlen(de->d_name) == 20
            && (best[0] == '\0'
                || (strcmp(de->d_name, best) > 0) == (newest != 0)))
        {
            memcpy(best, de->d_name, 21);     /* 20 and the NUL */
        }
    }
    closedir(dir);
    assert_true(best[0] != '\0');

    snprintf(path, pathlen, "%s/%s", kvdir, best);
    assert_int_equal(stat(path, &sb), 0);
    *len = (size_t) sb.st_size;

    data = malloc(*len);
    f = fopen(path, "rb");
    assert_non_null(data);
    assert_non_null(f);
    assert_int_equal(fread(data, 1, *len, f), *len);
    fclose(f);
    return data;
}


static void
kv_write_segment(const char *path, const uint8_t *data, size_t len)
{
    FILE  *f;

    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}


/* The path of the segment after the one at path; returns its seqno. */
static uint64_t
kv_next_path(const char *path, char *next, size_t nextlen)
{
    uint64_t     seqno;
    const char  *slash;

    slash = strrchr(path, '/');
    seqno = strtoull(slash + 1, NULL, 16) + 1;
    snprintf(next, nextlen, "%.*s/%016llx.log", (int) (slash - path), path,
             (unsigned long long) seqno);
    return seqno;
}


/* Offsets of the records of a segment (after its 56-byte header). */
static size_t
kv_records(const uint8_t *data, size_t len, size_t *at, size_t max)
{
    size_t    n, pos;
    uint32_t  rlen;

    n = 0;
    for (pos = 56; pos + 4 <= len && n < max; ) {
        rlen = (uint32_t) data[pos] << 24 | (uint32_t) data[pos + 1] << 16
               | (uint32_t) data[pos + 2] << 8 | data[pos + 3];
        if (pos + 4 + rlen + 16 > len) {
            break;
        }
        at[n++] = pos;
        pos += 4 + rlen + 16;
    }

    return n;
}


static int
backend_try_open(char *err, size_t errlen)
{
    provend_storage_config_t  cfg;

    memset(&cfg, 0, sizeof(cfg));
    cfg.data_dir = data_dir;
    cfg.master_key = master;
    cfg.kv_max_value = TEST_KV_MAX;
    cfg.sql_timeout_ms = TEST_TIMEOUT_MS;

    st = provend_storage_sqlite_open(&cfg, err, errlen);
    return st != NULL;
}


/*
 * The KV log: a record altered, or records swapped, before the end of a
 * later batch make the store refuse to open; a batch cut short at the end
 * (a torn write) is dropped and the rest is served, even when a record of
 * it landed whole after a torn one.
 */
static void
test_kv_log_tampered(void **state)
{
    char              path[512], err[PROVEN_ERR_LEN];
    size_t            len, n, at[4096], a, b, rec;
    uint8_t          *orig, *copy;
    provend_scope_t   s;

    (void) state;
    app_scope(&s, "logged");

    kv_set(&s, PROVEND_KV_BYTES, "key-a", "value-1");
    kv_set(&s, PROVEND_KV_BYTES, "key-b", "value-2");

    provend_storage_close(st);
    st = NULL;

    orig = kv_segment(path, sizeof(path), &len, 1);
    /* ... key-a, its batch's end, key-b, its batch's end */
    n = kv_records(orig, len, at, 4096);
    assert_true(n >= 4);
    a = at[n - 4];
    b = at[n - 2];
    rec = at[n - 3] - a;
    assert_int_equal(at[n - 1] - b, rec);   /* same lengths: swappable */

    copy = malloc(len);
    assert_non_null(copy);

    /* one bit of key-a's record */
    memcpy(copy, orig, len);
    copy[a + 4 + 3] ^= 0x01;
    kv_write_segment(path, copy, len);
    assert_false(backend_try_open(err, sizeof(err)));
    assert_non_null(strstr(err, "tampered"));

    /* the two records swapped */
    memcpy(copy, orig, len);
    memcpy(copy + a, orig + b, rec);
    memcpy(copy + b, orig + a, rec);
    kv_write_segment(path, copy, len);
    assert_false(backend_try_open(err, sizeof(err)));
    assert_non_null(strstr(err, "tampered"));

    /* key-b's batch cut short, as by a crash during its write */
    kv_write_segment(path, orig, b + rec / 2);
    assert_true(backend_try_open(err, sizeof(err)));
    expect_kv(&s, "key-a", "value-1", 1);
    expect_kv(&s, "key-b", NULL, 0);
    provend_storage_close(st);
    st = NULL;

    /* key-b's batch with its end torn, its record whole: not applied */
    memcpy(copy, orig, len);
    memset(copy + at[n - 1] + 4, 0, len - at[n - 1] - 4);
    kv_write_segment(path, copy, len);
    assert_true(backend_try_open(err, sizeof(err)));
    expect_kv(&s, "key-b", NULL, 0);
    provend_storage_close(st);
    st = NULL;

    /* key-b's record torn, its batch's end whole: a crash, not tampering */
    memcpy(copy, orig, len);
    memset(copy + b + 4, 0, rec - 4);
    kv_write_segment(path, copy, len);
    assert_true(backend_try_open(err, sizeof(err)));
    expect_kv(&s, "key-a", "value-1", 1);
    expect_kv(&s, "key-b", NULL, 0);
    provend_storage_close(st);
    st = NULL;

    /* whole again: both */
    kv_write_segment(path, orig, len);
    backend_open();
    expect_kv(&s, "key-a", "value-1", 1);
    expect_kv(&s, "key-b", "value-2", 1);
    provend_storage_close(st);
    st = NULL;

    /*
     * A snapshot cut by a crash before its end (a base segment with no
     * record yet, newest of all) is set aside; the log before it serves.
     */
    {
        char      next[512];
        uint8_t   header[56];
        uint64_t  seqno;

        seqno = kv_next_path(path, next, sizeof(next));
        memcpy(header, "PVKVLOG1", 8);
        for (n = 0; n < 8; n++) {
            header[8 + n] = (uint8_t) (seqno >> (56 - 8 * n));
            header[16 + n] = n == 7;                /* flags: base */
        }
        memset(header + 24, 0x5a, 32);
        kv_write_segment(next, header, sizeof(header));

        backend_open();
        expect_kv(&s, "key-a", "value-1", 1);
        expect_kv(&s, "key-b", "value-2", 1);
        assert_int_equal(access(next, F_OK), -1);
        assert_int_equal(access(strcat(next, ".dropped"), F_OK), 0);
        provend_storage_close(st);
        st = NULL;
    }

    /* A segment whose header a crash cut short is dropped as well. */
    {
        char      next[512];

        (void) kv_next_path(path, next, sizeof(next));
        kv_write_segment(next, (const uint8_t *) "PVKVLOG1\0\0", 10);

        backend_open();
        expect_kv(&s, "key-b", "value-2", 1);
        assert_int_equal(access(next, F_OK), -1);
        provend_storage_close(st);
        st = NULL;
    }

    /*
     * A zeroed header on a segment longer than any crash leaves (headers
     * are synced before anything follows them): refused, kept.
     */
    {
        char      next[512];
        uint8_t   zeros[200];

        (void) kv_next_path(path, next, sizeof(next));
        memset(zeros, 0, sizeof(zeros));
        kv_write_segment(next, zeros, sizeof(zeros));

        assert_false(backend_try_open(err, sizeof(err)));
        assert_non_null(strstr(err, "not a KV log segment"));
        assert_int_equal(access(next, F_OK), 0);
        assert_int_equal(unlink(next), 0);
    }

    /* A segment missing from the middle: refused. */
    {
        char      middle[512], moved[600];

        backend_open();
        kv_set(&s, PROVEND_KV_BYTES, "key-c", "value-3");  /* path + 1 */
        provend_storage_close(st);
        st = NULL;
        backend_open();
        kv_set(&s, PROVEND_KV_BYTES, "key-d", "value-4");  /* path + 2 */
        provend_storage_close(st);
        st = NULL;

        (void) kv_next_path(path, middle, sizeof(middle));
        snprintf(moved, sizeof(moved), "%s.aside", middle);

        assert_int_equal(rename(middle, moved), 0);
        assert_false(backend_try_open(err, sizeof(err)));
        assert_non_null(strstr(err, "missing"));
        assert_int_equal(rename(moved, middle), 0);
    }

    backend_open();
    expect_kv(&s, "key-c", "value-3", 1);
    expect_kv(&s, "key-d", "value-4", 1);

    free(copy);
    free(orig);
}


/*
 * A base segment whose snapshot end was altered must not pass for a
 * snapshot a crash cut short (which recovery sets aside): with a batch
 * after it, or with no older segment to fall back on, the store refuses
 * to open and keeps every file.
 */
static void
test_kv_log_damaged_base(void **state)
{
    int               i;
    char              path[512], saved[sizeof(data_dir)];
    char              err[PROVEN_ERR_LEN], key[32], value[32];
    size_t            len, n, at[4096];
    uint8_t          *orig, *copy;
    provend_scope_t   s;

    (void) state;
    app_scope(&s, "based");

    provend_storage_close(st);
    st = NULL;
    memcpy(saved, data_dir, sizeof(saved));
    snprintf(data_dir, sizeof(data_dir), "%s/based", top_dir);
    assert_int_equal(mkdir(data_dir, 0700), 0);

    /* the first segment: an empty snapshot's end, then one batch */
    backend_open();
    kv_set(&s, PROVEND_KV_BYTES, "first", "one");
    provend_storage_close(st);
    st = NULL;

    orig = kv_segment(path, sizeof(path), &len, 0);
    n = kv_records(orig, len, at, 4096);
    assert_int_equal(n, 3);                 /* end, set, commit */
    copy = malloc(len);
    assert_non_null(copy);
    memcpy(copy, orig, len);
    copy[at[0] + 4] ^= 0x01;
    kv_write_segment(path, copy, len);
    assert_false(backend_try_open(err, sizeof(err)));
    assert_non_null(strstr(err, "tampered"));
    assert_int_equal(access(path, F_OK), 0);
    kv_write_segment(path, orig, len);
    free(copy);
    free(orig);

    /* past 64 segments: compacted into a base that holds a snapshot */
    for (i = 0; i < 66; i++) {
        backend_open();
        snprintf(key, sizeof(key), "k%d", i % 5);
        snprintf(value, sizeof(value), "v%d", i);
        kv_set(&s, PROVEND_KV_BYTES, key, value);
        provend_storage_close(st);
        st = NULL;
    }

    /* its end altered, and the segments after it gone: refused */
    orig = kv_segment(path, sizeof(path), &len, 0);
    n = kv_records(orig, len, at, 4096);
    assert_true(n >= 6);
    {
        char           kvdir[256], other[600];
        DIR           *dir;
        struct dirent *de;

        snprintf(kvdir, sizeof(kvdir), "%s/storage/kv", data_dir);
        dir = opendir(kvdir);
        assert_non_null(dir);
        while ((de = readdir(dir)) != NULL) {
            snprintf(other, sizeof(other), "%s/%s", kvdir, de->d_name);
            if (de->d_name[0] != '.' && strcmp(other, path) != 0) {
                assert_int_equal(unlink(other), 0);
            }
        }
        closedir(dir);
    }

    /* the snapshot end: the first record that is a bare op */
    for (i = 0; (size_t) i < n; i++) {
        if (orig[at[i] + 3] == 1 && at[i] + 4 + 1 + 16 <= len) {
            break;
        }
    }
    assert_true((size_t) i < n);
    copy = malloc(len);
    assert_non_null(copy);
    memcpy(copy, orig, len);
    copy[at[i] + 4] ^= 0x01;
    kv_write_segment(path, copy, len);
    assert_false(backend_try_open(err, sizeof(err)));
    assert_non_null(strstr(err, "KV log"));
    assert_int_equal(access(path, F_OK), 0);

    /* whole again, it serves what the snapshot holds: all five keys */
    kv_write_segment(path, orig, len);
    backend_open();
    for (i = 0; i < 5; i++) {
        char      *got;
        uint64_t   rev;

        snprintf(key, sizeof(key), "k%d", i);
        got = kv_get(&s, PROVEND_KV_BYTES, key, &rev);
        assert_non_null(got);
        assert_true(rev >= 12);
        free(got);
    }
    provend_storage_close(st);
    st = NULL;

    free(copy);
    free(orig);
    memcpy(data_dir, saved, sizeof(saved));
    backend_open();
}


/*
 * Every KV value lives in memory: past the limit a set fails with
 * too_large and says why; what was stored stays, and a delete makes room.
 */
static void
test_kv_memory_limit(void **state)
{
    int                       i, stored;
    char                      err[PROVEN_ERR_LEN], key[32], value[4001];
    provend_scope_t           s;
    provend_storage_req_t    *r;
    provend_storage_config_t  cfg;

    (void) state;
    app_scope(&s, "bounded");

    provend_storage_close(st);
    memset(&cfg, 0, sizeof(cfg));
    cfg.data_dir = data_dir;
    cfg.master_key = master;
    cfg.kv_max_value = TEST_KV_MAX;
    cfg.kv_memory_max = 1024 * 1024;
    st = provend_storage_sqlite_open(&cfg, err, sizeof(err));
    assert_non_null(st);

    memset(value, 'v', sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';

    stored = 0;
    for (i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        r = kv_req(PROVEND_OP_KV_SET, &s, PROVEND_KV_BYTES, key);
        set_value(r, value, strlen(value));
        if (provend_storage_call(st, r) != PROVEND_ST_OK) {
            assert_int_equal(r->status, PROVEND_ST_TOO_LARGE);
            assert_non_null(strstr(r->error, "KV storage is full"));
            provend_storage_req_free(r);
            break;
        }
        provend_storage_req_free(r);
        stored++;
    }

    /* about 1 MiB of 4000-byte values, not all 1000 */
    assert_true(stored > 100 && stored < 300);
    expect_kv(&s, "k0", value, 1);

    r = kv_req(PROVEND_OP_KV_DELETE, &s, PROVEND_KV_BYTES, "k0");
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    provend_storage_req_free(r);
    assert_int_equal(kv_set(&s, PROVEND_KV_BYTES, "after", "room again"), 1);

    for (i = 1; i < stored; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        r = kv_req(PROVEND_OP_KV_DELETE, &s, PROVEND_KV_BYTES, key);
        assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
        provend_storage_req_free(r);
    }

    provend_storage_close(st);
    st = NULL;
    backend_open();
    expect_kv(&s, "after", "room again", 1);
    expect_kv(&s, "k1", NULL, 0);
}


/*
 * Across reopenings (a segment per run) and a compaction nothing is lost;
 * writes go on after each.
 */
static void
test_kv_log_reopen(void **state)
{
    int              i;
    char             key[32], value[32];
    provend_scope_t  s;

    (void) state;
    app_scope(&s, "reopened");

    for (i = 0; i < 70; i++) {
        snprintf(key, sizeof(key), "k%d", i % 10);
        snprintf(value, sizeof(value), "v%d", i);
        kv_set(&s, PROVEND_KV_BYTES, key, value);

        /* 70 runs: past the 64 segments after which the log is compacted */
        provend_storage_close(st);
        st = NULL;
        backend_open();
    }

    for (i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(value, sizeof(value), "v%d", 60 + i);
        expect_kv(&s, key, value, 7);
    }

    {
        DIR            *dir;
        char            kvdir[256];
        size_t          segments;
        struct dirent  *de;

        snprintf(kvdir, sizeof(kvdir), "%s/storage/kv", data_dir);
        dir = opendir(kvdir);
        assert_non_null(dir);
        segments = 0;
        while ((de = readdir(dir)) != NULL) {
            segments += strlen(de->d_name) == 20;
        }
        closedir(dir);
        assert_true(segments < 64);
    }
}


/* ---- SQL ----------------------------------------------------------------- */

static void
test_sql_execute_query(void **state)
{
    char                   *cursor;
    size_t                  i, seen;
    cbor_item_t            *rows, *row, *cols, *c;
    provend_scope_t         s;
    provend_storage_req_t  *r;
    const char             *sql;

    (void) state;
    app_scope(&s, "sqlapp");

    sql_ok(&s, "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, "
               "f REAL, s TEXT, b BLOB)");

    sql = "INSERT INTO t (n, f, s, b) VALUES (?, ?, ?, ?)";
    r = sql_req(PROVEND_OP_SQL_EXECUTE, &s, 1, &sql);
    add_param(&r->stmts[0], PROVEND_SQL_INTEGER, -42, 0, NULL);
    add_param(&r->stmts[0], PROVEND_SQL_REAL, 0, 1.5, NULL);
    add_param(&r->stmts[0], PROVEND_SQL_TEXT, 0, 0, "héllo");
    add_param(&r->stmts[0], PROVEND_SQL_NULL, 0, 0, NULL);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    assert_int_equal(result_uint(r, "changes"), 1);
    assert_int_equal(result_uint(r, "last_insert_rowid"), 1);
    provend_storage_req_free(r);

    sql = "SELECT n, f, s, b FROM t";
    r = sql_req(PROVEND_OP_SQL_QUERY, &s, 1, &sql);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    cols = proven_cbor_map_get(r->result, "columns");
    assert_int_equal(cbor_array_size(cols), 4);
    rows = proven_cbor_map_get(r->result, "rows");
    assert_int_equal(cbor_array_size(rows), 1);
    row = cbor_array_handle(rows)[0];
    assert_true(cbor_isa_negint(cbor_array_handle(row)[0]));
    assert_int_equal(cbor_get_int(cbor_array_handle(row)[0]), 41);
    assert_true(cbor_float_get_float(cbor_array_handle(row)[1]) == 1.5);
    assert_int_equal(cbor_string_length(cbor_array_handle(row)[2]), 6);
    assert_true(proven_cbor_is_null(cbor_array_handle(row)[3]));
    assert_true(proven_cbor_is_null(proven_cbor_map_get(r->result,
                                                        "cursor")));
    provend_storage_req_free(r);

    /* too many params; two statements in one sql; a write as a query */
    sql = "SELECT ?";
    r = sql_req(PROVEND_OP_SQL_QUERY, &s, 1, &sql);
    add_param(&r->stmts[0], PROVEND_SQL_INTEGER, 1, 0, NULL);
    add_param(&r->stmts[0], PROVEND_SQL_INTEGER, 2, 0, NULL);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_BAD_REQUEST);
    provend_storage_req_free(r);

    assert_int_equal(sql_one(PROVEND_OP_SQL_EXECUTE, &s,
                             "DELETE FROM t; DROP TABLE t", NULL, 0),
                     PROVEND_ST_BAD_REQUEST);
    assert_int_equal(sql_one(PROVEND_OP_SQL_QUERY, &s, "DELETE FROM t",
                             NULL, 0), PROVEND_ST_BAD_REQUEST);
    assert_int_equal(sql_one(PROVEND_OP_SQL_EXECUTE, &s, "SELEC 1", NULL, 0),
                     PROVEND_ST_SQL_ERROR);
    assert_int_equal(sql_int(&s, "SELECT count(*) FROM t"), 1);

    /* pages through a cursor */
    sql_ok(&s, "CREATE TABLE seq (x INTEGER)");
    sql_ok(&s, "INSERT INTO seq WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
               "SELECT x + 1 FROM c WHERE x < 23) SELECT x FROM c");

    cursor = NULL;
    seen = 0;
    do {
        sql = "SELECT x FROM seq ORDER BY x";
        r = sql_req(PROVEND_OP_SQL_QUERY, &s, 1, &sql);
        r->limit = 10;
        r->cursor = cursor;
        assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
        rows = proven_cbor_map_get(r->result, "rows");
        for (i = 0; i < cbor_array_size(rows); i++) {
            row = cbor_array_handle(rows)[i];
            assert_int_equal(cbor_get_int(cbor_array_handle(row)[0]),
                             ++seen);
        }
        c = proven_cbor_map_get(r->result, "cursor");
        cursor = proven_cbor_is_null(c)
                 ? NULL : strndup((char *) cbor_string_handle(c),
                                  cbor_string_length(c));
        provend_storage_req_free(r);
    } while (cursor != NULL && seen < 100);

    assert_int_equal(seen, 23);
}


static void
test_sql_batch_atomic(void **state)
{
    provend_scope_t         s;
    provend_storage_req_t  *r;

    static const char *const  good[] = {
        "CREATE TABLE acct (name TEXT PRIMARY KEY, cents INTEGER)",
        "INSERT INTO acct VALUES ('a', 100)",
        "INSERT INTO acct VALUES ('b', 0)",
    };
    static const char *const  bad[] = {
        "UPDATE acct SET cents = cents - 50 WHERE name = 'a'",
        "UPDATE acct SET cents = cents + 50 WHERE name = 'b'",
        "INSERT INTO acct VALUES ('a', 1)",
    };

    (void) state;
    app_scope(&s, "batch");

    r = sql_req(PROVEND_OP_SQL_EXECUTE, &s, 3, (const char **) good);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    assert_int_equal(result_uint(r, "changes"), 2);
    provend_storage_req_free(r);

    r = sql_req(PROVEND_OP_SQL_EXECUTE, &s, 3, (const char **) bad);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_SQL_ERROR);
    provend_storage_req_free(r);

    assert_int_equal(sql_int(&s, "SELECT cents FROM acct WHERE name = 'a'"),
                     100);
    assert_int_equal(sql_int(&s, "SELECT cents FROM acct WHERE name = 'b'"),
                     0);

    r = sql_req(PROVEND_OP_SQL_EXECUTE, &s, 2, (const char **) bad);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    assert_int_equal(result_uint(r, "changes"), 2);
    provend_storage_req_free(r);

    assert_int_equal(sql_int(&s, "SELECT cents FROM acct WHERE name = 'b'"),
                     50);
}


static void
test_sql_migrate(void **state)
{
    provend_scope_t         s;
    provend_storage_req_t  *r;

    static const char *const  m[] = {
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);"
        "CREATE INDEX users_name ON users (name)",
        "ALTER TABLE users ADD COLUMN email TEXT",
        "INSERT INTO users (name) VALUES ('first')",
    };
    static const char *const  changed[] = {
        "CREATE TABLE users (id INTEGER PRIMARY KEY)",
    };
    static const char *const  failing[] = {
        m[0], m[1], m[2], "CREATE TABLE users (x)"
    };

    (void) state;
    app_scope(&s, "migrate");

    r = sql_req(PROVEND_OP_SQL_MIGRATE, &s, 2, (const char **) m);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    assert_int_equal(result_uint(r, "applied"), 2);
    assert_int_equal(result_uint(r, "version"), 2);
    provend_storage_req_free(r);

    r = sql_req(PROVEND_OP_SQL_MIGRATE, &s, 2, (const char **) m);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    assert_int_equal(result_uint(r, "applied"), 0);
    assert_int_equal(result_uint(r, "version"), 2);
    provend_storage_req_free(r);

    r = sql_req(PROVEND_OP_SQL_MIGRATE, &s, 3, (const char **) m);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    assert_int_equal(result_uint(r, "applied"), 1);
    assert_int_equal(result_uint(r, "version"), 3);
    provend_storage_req_free(r);

    assert_int_equal(sql_int(&s, "SELECT count(*) FROM users"), 1);

    r = sql_req(PROVEND_OP_SQL_MIGRATE, &s, 1, (const char **) changed);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_BAD_REQUEST);
    provend_storage_req_free(r);

    /* a failing migration leaves nothing behind */
    r = sql_req(PROVEND_OP_SQL_MIGRATE, &s, 4, (const char **) failing);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_SQL_ERROR);
    assert_non_null(strstr(r->error, "migration 4"));
    provend_storage_req_free(r);

    r = sql_req(PROVEND_OP_SQL_MIGRATE, &s, 3, (const char **) m);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    assert_int_equal(result_uint(r, "applied"), 0);
    assert_int_equal(result_uint(r, "version"), 3);
    provend_storage_req_free(r);
}


static void
test_sql_denied(void **state)
{
    size_t           i;
    char             msg[PROVEN_ERR_LEN];
    provend_scope_t  s;

    static const char *const  denied[] = {
        "ATTACH DATABASE '/tmp/x.db' AS x",
        "DETACH DATABASE main",
        "PRAGMA writable_schema = 1",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA user_version = 5",
        "SELECT load_extension('/tmp/x')",
        "SELECT * FROM _proven_migrations",
        "DELETE FROM _proven_migrations",
        "DROP TABLE _proven_migrations",
        "CREATE TABLE _proven_mine (x)",
        "PRAGMA table_info(_proven_migrations)",
        "BEGIN",
        "COMMIT",
        "SAVEPOINT x",
        "VACUUM INTO '/tmp/copy.db'",
    };

    (void) state;
    app_scope(&s, "denied");

    sql_ok(&s, "CREATE TABLE t (x)");
    {
        provend_storage_req_t  *r;
        static const char *const  mig[] = { "CREATE TABLE m (x)" };

        r = sql_req(PROVEND_OP_SQL_MIGRATE, &s, 1, (const char **) mig);
        assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
        provend_storage_req_free(r);
    }

    for (i = 0; i < sizeof(denied) / sizeof(denied[0]); i++) {
        provend_storage_status_t  status;

        status = sql_one(PROVEND_OP_SQL_EXECUTE, &s, denied[i], msg,
                         sizeof(msg));
        if (status != PROVEND_ST_SQL_DENIED && status != PROVEND_ST_SQL_ERROR)
        {
            fail_msg("%s: not refused (%d %s)", denied[i], status, msg);
        }
        if (i < 11 && status != PROVEND_ST_SQL_DENIED) {
            fail_msg("%s: %s, not sql_denied", denied[i], msg);
        }
    }

    /* reading the schema is fine */
    assert_int_equal(sql_one(PROVEND_OP_SQL_QUERY, &s, "PRAGMA table_info(t)",
                             NULL, 0), PROVEND_ST_OK);
    assert_int_equal(sql_one(PROVEND_OP_SQL_QUERY, &s, "PRAGMA user_version",
                             NULL, 0), PROVEND_ST_OK);
    assert_int_equal(sql_int(&s, "SELECT count(*) FROM t"), 0);
}


static void
test_sql_timeout_and_size(void **state)
{
    char             msg[PROVEN_ERR_LEN];
    struct timespec  t0, t1;
    provend_scope_t  s;

    (void) state;
    app_scope(&s, "bounds");

    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(sql_one(PROVEND_OP_SQL_QUERY, &s,
                             "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
                             "SELECT x + 1 FROM c) SELECT count(*) FROM c",
                             msg, sizeof(msg)), PROVEND_ST_TIMEOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(t1.tv_sec - t0.tv_sec < 5);

    /* still usable afterwards */
    assert_int_equal(sql_one(PROVEND_OP_SQL_QUERY, &s, "SELECT 1", NULL, 0),
                     PROVEND_ST_OK);

    assert_int_equal(sql_one(PROVEND_OP_SQL_QUERY, &s,
                             "SELECT zeroblob(3000000) FROM (VALUES (1), "
                             "(2), (3))", msg, sizeof(msg)),
                     PROVEND_ST_TOO_LARGE);
    assert_int_equal(sql_one(PROVEND_OP_SQL_QUERY, &s,
                             "SELECT zeroblob(3000000) FROM (VALUES (1), "
                             "(2))", msg, sizeof(msg)), PROVEND_ST_OK);
}


static void
test_sql_isolation(void **state)
{
    DIR             *dir;
    char             path[256];
    size_t           files;
    struct dirent   *e;
    provend_scope_t  a, b, p;

    (void) state;

    app_scope(&a, "sqliso-a");
    app_scope(&b, "sqliso-b");
    p = a;
    p.kind = PROVEND_SCOPE_PERSONAL;
    snprintf(p.identity, sizeof(p.identity), "alice");

    sql_ok(&a, "CREATE TABLE t (x)");
    sql_ok(&a, "INSERT INTO t VALUES (1)");
    assert_int_equal(sql_one(PROVEND_OP_SQL_QUERY, &b, "SELECT * FROM t",
                             NULL, 0), PROVEND_ST_SQL_ERROR);
    assert_int_equal(sql_one(PROVEND_OP_SQL_QUERY, &p, "SELECT * FROM t",
                             NULL, 0), PROVEND_ST_SQL_ERROR);
    assert_int_equal(sql_one(PROVEND_OP_SQL_QUERY, &a,
                             "SELECT * FROM main.sqlite_master, "
                             "other.t", NULL, 0), PROVEND_ST_SQL_ERROR);

    /* file names are 64 hex digits: no scope or db name on disk */
    snprintf(path, sizeof(path), "%s/storage/sql", data_dir);
    dir = opendir(path);
    assert_non_null(dir);
    files = 0;
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        assert_int_equal(strspn(e->d_name, "0123456789abcdef"), 64);
        files++;
    }
    closedir(dir);
    assert_true(files >= 3);
}


/* ---- review fixes ------------------------------------------------------- */

/* fts3_tokenizer() takes a function pointer as a blob: never reachable. */
static void
test_sql_virtual_tables(void **state)
{
    size_t           i;
    char             msg[PROVEN_ERR_LEN];
    provend_scope_t  s;

    static const char *const  denied[] = {
        "SELECT fts3_tokenizer('x', X'4141414141414141')",
        "SELECT hex(fts3_tokenizer('simple'))",
        "CREATE VIRTUAL TABLE v3 USING fts3(body, tokenize=x)",
        "CREATE VIRTUAL TABLE v4 USING fts4(body)",
        "CREATE VIRTUAL TABLE vs USING dbstat",
        "CREATE VIRTUAL TABLE _proven_x USING fts5(body)",
    };

    (void) state;
    app_scope(&s, "vtab");

    for (i = 0; i < sizeof(denied) / sizeof(denied[0]); i++) {
        if (sql_one(PROVEND_OP_SQL_EXECUTE, &s, denied[i], msg, sizeof(msg))
            != PROVEND_ST_SQL_DENIED)
        {
            fail_msg("%s: not sql_denied: %s", denied[i], msg);
        }
    }

    sql_ok(&s, "CREATE VIRTUAL TABLE docs USING fts5(body)");
    sql_ok(&s, "INSERT INTO docs (body) VALUES ('hello world'), ('bye')");
    assert_int_equal(sql_int(&s, "SELECT count(*) FROM docs WHERE docs "
                                 "MATCH 'hello'"), 1);
    sql_ok(&s, "CREATE VIRTUAL TABLE boxes USING rtree(id, x0, x1)");
    sql_ok(&s, "INSERT INTO boxes VALUES (1, 0, 10)");
    assert_int_equal(sql_int(&s, "SELECT count(*) FROM boxes WHERE x0 < 5"),
                     1);
    sql_ok(&s, "DROP TABLE docs");
    sql_ok(&s, "DROP TABLE boxes");
}


/* changes and last_insert_rowid are this request's, never an earlier one's */
static void
test_sql_changes(void **state)
{
    provend_scope_t         s;
    provend_storage_req_t  *r;
    const char             *sql;

    static const char *const  batch[] = {
        "INSERT INTO t (x) VALUES (1), (2)",
        "CREATE INDEX t_x ON t (x)",
        "SELECT 1",
    };

    (void) state;
    app_scope(&s, "changes");

    sql_ok(&s, "CREATE TABLE t (id INTEGER PRIMARY KEY, x)");
    sql_ok(&s, "CREATE TABLE log (x)");
    sql_ok(&s, "CREATE TABLE nr (k TEXT PRIMARY KEY) WITHOUT ROWID");
    sql_ok(&s, "CREATE TRIGGER t_log AFTER INSERT ON t BEGIN INSERT INTO log "
               "VALUES (new.x); END");

    sql = "INSERT INTO t (x) VALUES (7)";
    r = sql_req(PROVEND_OP_SQL_EXECUTE, &s, 1, &sql);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    assert_int_equal(result_uint(r, "changes"), 1);
    assert_int_equal(result_uint(r, "last_insert_rowid"), 1);
    provend_storage_req_free(r);

    /* DDL and SELECT change nothing and insert nothing */
    sql = "CREATE TABLE u (y)";
    r = sql_req(PROVEND_OP_SQL_EXECUTE, &s, 1, &sql);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    assert_int_equal(result_uint(r, "changes"), 0);
    assert_int_equal(result_uint(r, "last_insert_rowid"), 0);
    provend_storage_req_free(r);

    sql = "SELECT * FROM t";
    r = sql_req(PROVEND_OP_SQL_EXECUTE, &s, 1, &sql);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    assert_int_equal(result_uint(r, "changes"), 0);
    assert_int_equal(result_uint(r, "last_insert_rowid"), 0);
    provend_storage_req_free(r);

    /* an UPDATE that matches nothing */
    sql = "UPDATE t SET x = 0 WHERE id = 99";
    r = sql_req(PROVEND_OP_SQL_EXECUTE, &s, 1, &sql);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    assert_int_equal(result_uint(r, "changes"), 0);
    assert_int_equal(result_uint(r, "last_insert_rowid"), 0);
    provend_storage_req_free(r);

    /* a batch: its own inserts; DDL after them keeps them */
    r = sql_req(PROVEND_OP_SQL_EXECUTE, &s, 3, (const char **) batch);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    assert_int_equal(result_uint(r, "changes"), 2);
    assert_int_equal(result_uint(r, "last_insert_rowid"), 3);
    provend_storage_req_free(r);

    /* no rowid table: no rowid */
    sql = "INSERT INTO nr VALUES ('a')";
    r = sql_req(PROVEND_OP_SQL_EXECUTE, &s, 1, &sql);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    assert_int_equal(result_uint(r, "changes"), 1);
    assert_int_equal(result_uint(r, "last_insert_rowid"), 0);
    provend_storage_req_free(r);

    assert_int_equal(sql_int(&s, "SELECT count(*) FROM log"), 3);
}


/* The app cannot make its own table the migrations table. */
static void
test_sql_reserved_rename(void **state)
{
    char                    msg[PROVEN_ERR_LEN];
    provend_scope_t         s;
    provend_storage_req_t  *r;

    static const char *const  m[] = {
        "CREATE TABLE a (x)",
        "CREATE TABLE b (x)",
    };

    (void) state;
    app_scope(&s, "rename");

    /* a fresh database, no migration run yet */
    sql_ok(&s, "CREATE TABLE fake (version INTEGER PRIMARY KEY, sha256 "
               "BLOB NOT NULL)");
    assert_int_not_equal(sql_one(PROVEND_OP_SQL_EXECUTE, &s,
                                 "ALTER TABLE fake RENAME TO "
                                 "_proven_migrations", msg, sizeof(msg)),
                         PROVEND_ST_OK);
    assert_int_not_equal(sql_one(PROVEND_OP_SQL_EXECUTE, &s,
                                 "ALTER TABLE fake RENAME TO "
                                 "_PROVEN_MIGRATIONS", msg, sizeof(msg)),
                         PROVEND_ST_OK);
    assert_int_equal(sql_one(PROVEND_OP_SQL_EXECUTE, &s,
                             "ALTER TABLE fake RENAME TO _proven_other",
                             msg, sizeof(msg)), PROVEND_ST_SQL_DENIED);

    /* a temp table would shadow main's */
    sql_ok(&s, "CREATE TEMP TABLE tfake (version INTEGER PRIMARY KEY, "
               "sha256 BLOB NOT NULL)");
    assert_int_equal(sql_one(PROVEND_OP_SQL_EXECUTE, &s,
                             "ALTER TABLE temp.tfake RENAME TO "
                             "_proven_migrations", msg, sizeof(msg)),
                     PROVEND_ST_SQL_DENIED);

    /* the table is still "fake"; migrations run from the start */
    sql_ok(&s, "INSERT INTO fake VALUES (1, zeroblob(32))");
    r = sql_req(PROVEND_OP_SQL_MIGRATE, &s, 2, (const char **) m);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_OK);
    assert_int_equal(result_uint(r, "applied"), 2);
    provend_storage_req_free(r);
    assert_int_equal(sql_int(&s, "SELECT count(*) FROM a"), 0);
}


static void
test_sql_result_bounds(void **state)
{
    char             sql[8192], *p;
    int              i;
    provend_scope_t  s;

    (void) state;
    app_scope(&s, "resbounds");

    /* one value at most 8 MiB; at most 500 columns */
    assert_int_equal(sql_one(PROVEND_OP_SQL_QUERY, &s,
                             "SELECT length(zeroblob(9000000))", NULL, 0),
                     PROVEND_ST_SQL_ERROR);
    assert_int_equal(sql_one(PROVEND_OP_SQL_QUERY, &s,
                             "SELECT length(zeroblob(8000000))", NULL, 0),
                     PROVEND_ST_OK);

    p = sql;
    p += sprintf(p, "SELECT 0");
    for (i = 1; i < 501; i++) {
        p += sprintf(p, ",%d", i);
    }
    assert_int_equal(sql_one(PROVEND_OP_SQL_QUERY, &s, sql, NULL, 0),
                     PROVEND_ST_SQL_ERROR);

    /* one row over the bound */
    assert_int_equal(sql_one(PROVEND_OP_SQL_QUERY, &s,
                             "SELECT zeroblob(5000000), zeroblob(5000000)",
                             NULL, 0), PROVEND_ST_TOO_LARGE);
}


/*
 * SQLite's heap is bounded (1 GiB unless the process set a limit first): a
 * row of many huge blobs fails as too_large before it is ever built, and
 * the backend keeps serving.  The test lowers the limit for speed.
 */
static void
test_sql_heap_limit(void **state)
{
    char                    sql[512], *p;
    int                     i;
    sqlite3_int64           old;
    provend_scope_t         s;
    provend_storage_req_t  *r;
    const char             *q;

    (void) state;
    app_scope(&s, "heaplimit");

    old = sqlite3_hard_heap_limit64(-1);
    assert_int_equal(old, 1024LL * 1024 * 1024);

    p = sql;
    p += sprintf(p, "SELECT randomblob(8000000)");
    for (i = 1; i < 12; i++) {
        p += sprintf(p, ", randomblob(8000000)");
    }

    (void) sqlite3_hard_heap_limit64(sqlite3_memory_used()
                                     + 48LL * 1024 * 1024);
    q = sql;
    r = sql_req(PROVEND_OP_SQL_QUERY, &s, 1, &q);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_TOO_LARGE);
    assert_non_null(strstr(r->error, "heap limit"));
    provend_storage_req_free(r);
    (void) sqlite3_hard_heap_limit64(old);

    assert_int_equal(sql_int(&s, "SELECT length(randomblob(1000))"), 1000);
}


/* Loop count that makes one query run for about ms. */
static long
calibrate_loop(const provend_scope_t *s, long ms)
{
    char             sql[256];
    long             n, took;
    struct timespec  t0, t1;

    for (n = 1000; n < 100000000; n *= 2) {
        snprintf(sql, sizeof(sql), "WITH RECURSIVE c(x) AS (SELECT 1 UNION "
                 "ALL SELECT x + 1 FROM c WHERE x < %ld) SELECT count(*) "
                 "FROM c", n);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        assert_int_equal(sql_one(PROVEND_OP_SQL_QUERY, s, sql, NULL, 0),
                         PROVEND_ST_OK);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        took = (t1.tv_sec - t0.tv_sec) * 1000
               + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        if (took >= ms) {
            return n;
        }
    }

    fail_msg("cannot calibrate a slow query");
    return 0;
}


/* The timeout bounds a whole batch and a whole migrate call. */
static void
test_sql_deadline_per_request(void **state)
{
    char                    one[256];
    long                    n, took;
    size_t                  i;
    const char             *sqls[20];
    struct timespec         t0, t1;
    provend_scope_t         s;
    provend_storage_req_t  *r;

    (void) state;
    app_scope(&s, "deadline");

    /* each statement well under the timeout, 20 of them well over it */
    n = calibrate_loop(&s, TEST_TIMEOUT_MS / 6);
    snprintf(one, sizeof(one), "INSERT INTO t SELECT count(*) FROM (WITH "
             "RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
             "WHERE x < %ld) SELECT x FROM c)", n);
    sql_ok(&s, "CREATE TABLE t (n)");
    for (i = 0; i < 20; i++) {
        sqls[i] = one;
    }

    clock_gettime(CLOCK_MONOTONIC, &t0);
    r = sql_req(PROVEND_OP_SQL_EXECUTE, &s, 20, sqls);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_TIMEOUT);
    provend_storage_req_free(r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    took = (t1.tv_sec - t0.tv_sec) * 1000
           + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(took < 3 * TEST_TIMEOUT_MS);

    r = sql_req(PROVEND_OP_SQL_MIGRATE, &s, 20, sqls);
    assert_int_equal(provend_storage_call(st, r), PROVEND_ST_TIMEOUT);
    provend_storage_req_free(r);

    assert_int_equal(sql_int(&s, "SELECT count(*) FROM t"), 0);
}


/* Requests answered asynchronously, counted. */
static pthread_mutex_t  async_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t   async_cond = PTHREAD_COND_INITIALIZER;
static int              async_left;


static void
async_done(provend_storage_req_t *req)
{
    (void) req;
    pthread_mutex_lock(&async_lock);
    async_left--;
    pthread_cond_signal(&async_cond);
    pthread_mutex_unlock(&async_lock);
}


static void
async_submit(provend_storage_req_t *r)
{
    pthread_mutex_lock(&async_lock);
    async_left++;
    pthread_mutex_unlock(&async_lock);
    r->done = async_done;
    provend_storage_submit(st, r);
}


static void
async_wait(void)
{
    pthread_mutex_lock(&async_lock);
    while (async_left > 0) {
        pthread_cond_wait(&async_cond, &async_lock);
    }
    pthread_mutex_unlock(&async_lock);
}


/*
 * A KV write is seen only once it is durable: reads submitted while it is
 * pending see the state before it, and when it cannot be stored (here: no
 * file may grow) it fails, is never seen, and the store works afterwards.
 */
static void
test_kv_read_waits_for_commit(void **state)
{
    size_t                  i;
    cbor_item_t            *keys;
    struct rlimit           old, none;
    provend_scope_t         s;
    provend_storage_req_t  *r[6];

    (void) state;
    app_scope(&s, "commitfail");

    kv_set(&s, PROVEND_KV_BYTES, "other", "x");

    r[1] = kv_req(PROVEND_OP_KV_SET, &s, PROVEND_KV_BYTES, "k");
    set_value(r[1], "lost", 4);
    r[2] = kv_req(PROVEND_OP_KV_GET, &s, PROVEND_KV_BYTES, "k");
    r[3] = kv_req(PROVEND_OP_KV_KEYS, &s, PROVEND_KV_BYTES, NULL);
    r[4] = kv_req(PROVEND_OP_KV_SET, &s, PROVEND_KV_KEY, "signer");
    r[5] = kv_req(PROVEND_OP_KV_SIGN, &s, PROVEND_KV_KEY, "signer");
    r[5]->message = dup_bytes("m", 1);
    r[5]->message_len = 1;

    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    none = old;
    none.rlim_cur = 0;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &none), 0);

    for (i = 1; i < 6; i++) {
        async_submit(r[i]);
    }
    async_wait();

    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);

    assert_int_equal(r[1]->status, PROVEND_ST_STORAGE_ERROR);
    assert_int_equal(r[4]->status, PROVEND_ST_STORAGE_ERROR);

    /* the pending value was never visible */
    assert_int_equal(r[2]->status, PROVEND_ST_OK);
    assert_true(proven_cbor_is_null(proven_cbor_map_get(r[2]->result,
                                                        "value")));
    assert_int_equal(r[3]->status, PROVEND_ST_OK);
    keys = proven_cbor_map_get(r[3]->result, "keys");
    assert_non_null(keys);
    assert_int_equal(cbor_array_size(keys), 1);
    assert_int_equal(r[5]->status, PROVEND_ST_NOT_FOUND);

    for (i = 1; i < 6; i++) {
        provend_storage_req_free(r[i]);
    }

    /* nothing was stored, and the store works again */
    expect_kv(&s, "k", NULL, 0);
    expect_kv(&s, "other", "x", 1);
    assert_int_equal(kv_set(&s, PROVEND_KV_BYTES, "k", "kept"), 1);
    expect_kv(&s, "k", "kept", 1);

    /* and after a restart too */
    provend_storage_close(st);
    st = NULL;
    backend_open();
    expect_kv(&s, "k", "kept", 1);
    expect_kv(&s, "other", "x", 1);
}


/*
 * A request that makes SQLite roll back the whole transaction of a batch
 * (RAISE(ROLLBACK) in a trigger, INSERT OR ROLLBACK) fails alone: the
 * others of that transaction, before and after it, run again and are
 * stored; a read among them sees the writes before it.
 */
static void
test_sql_rollback_spares_others(void **state)
{
    size_t                  i;
    cbor_item_t            *rows, *row;
    provend_scope_t         s, slow;
    provend_storage_req_t  *r[9];
    const char             *spin, *sql;

    (void) state;
    app_scope(&s, "rollback");
    app_scope(&slow, "rollback-slow");

    sql_ok(&slow, "CREATE TABLE t (x)");
    sql_ok(&s, "CREATE TABLE t (x)");
    sql_ok(&s, "CREATE TABLE bad (x)");
    sql_ok(&s, "CREATE TRIGGER bad_no BEFORE INSERT ON bad BEGIN "
               "SELECT RAISE(ROLLBACK, 'refused'); END");
    sql_ok(&s, "CREATE TABLE u (x UNIQUE)");
    sql_ok(&s, "INSERT INTO u VALUES (1)");

    /* Keeps the storage thread busy while the rest queue as one batch. */
    spin = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
           "SELECT count(*) FROM c";
    r[0] = sql_req(PROVEND_OP_SQL_QUERY, &slow, 1, &spin);

    r[1] = kv_req(PROVEND_OP_KV_SET, &s, PROVEND_KV_BYTES, "k");
    set_value(r[1], "kept", 4);
    sql = "INSERT INTO t VALUES (1)";
    r[2] = sql_req(PROVEND_OP_SQL_EXECUTE, &s, 1, &sql);
    sql = "SELECT count(*) FROM t";
    r[3] = sql_req(PROVEND_OP_SQL_QUERY, &s, 1, &sql);
    sql = "INSERT INTO bad VALUES (1)";
    r[4] = sql_req(PROVEND_OP_SQL_EXECUTE, &s, 1, &sql);
    sql = "INSERT INTO t VALUES (2)";
    r[5] = sql_req(PROVEND_OP_SQL_EXECUTE, &s, 1, &sql);
    sql = "INSERT OR ROLLBACK INTO u VALUES (1)";
    r[6] = sql_req(PROVEND_OP_SQL_EXECUTE, &s, 1, &sql);
    sql = "INSERT INTO t VALUES (3)";
    r[7] = sql_req(PROVEND_OP_SQL_EXECUTE, &s, 1, &sql);
    r[8] = kv_req(PROVEND_OP_KV_GET, &s, PROVEND_KV_BYTES, "k");

    for (i = 0; i < 9; i++) {
        async_submit(r[i]);
    }
    async_wait();

    assert_int_equal(r[0]->status, PROVEND_ST_TIMEOUT);
    assert_int_equal(r[4]->status, PROVEND_ST_SQL_ERROR);
    assert_non_null(strstr(r[4]->error, "refused"));
    assert_int_equal(r[6]->status, PROVEND_ST_SQL_ERROR);
    for (i = 1; i < 9; i++) {
        if (i != 4 && i != 6 && r[i]->status != PROVEND_ST_OK) {
            fail_msg("request %zu: status %d: %s", i, r[i]->status,
                     r[i]->error);
        }
    }
    assert_int_equal(result_uint(r[2], "changes"), 1);
    assert_int_equal(result_uint(r[5], "changes"), 1);

    rows = proven_cbor_map_get(r[3]->result, "rows");
    assert_non_null(rows);
    assert_int_equal(cbor_array_size(rows), 1);
    row = cbor_array_handle(rows)[0];
    assert_int_equal(cbor_get_int(cbor_array_handle(row)[0]), 1);

    for (i = 0; i < 9; i++) {
        provend_storage_req_free(r[i]);
    }

    /* the innocent writes are stored, the culprits' are not */
    expect_kv(&s, "k", "kept", 1);
    assert_int_equal(sql_int(&s, "SELECT count(*) FROM t"), 3);
    assert_int_equal(sql_int(&s, "SELECT sum(x) FROM t"), 6);
    assert_int_equal(sql_int(&s, "SELECT count(*) FROM bad"), 0);
    assert_int_equal(sql_int(&s, "SELECT count(*) FROM u"), 1);
}


/*
 * Re-runs are bounded per batch: after three rollbacks (a timeout among
 * them), the fourth fails the transaction's others as before, so hostile
 * SQL cannot keep the storage thread redoing work.
 */
static void
test_sql_rollback_rerun_bounded(void **state)
{
    size_t                  i;
    provend_scope_t         s, slow;
    provend_storage_req_t  *r[10];
    const char             *spin, *sql;

    static const char *const  stmts[10] = {
        NULL,
        "INSERT INTO t VALUES (1)",
        "INSERT INTO t SELECT count(*) FROM (WITH RECURSIVE c(x) AS "
        "(SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c)",
        "INSERT INTO t VALUES (2)",
        "INSERT INTO bad VALUES (1)",
        "INSERT INTO t VALUES (3)",
        "INSERT OR ROLLBACK INTO u VALUES (1)",
        "INSERT INTO t VALUES (4)",
        "INSERT INTO bad VALUES (2)",
        "INSERT INTO t VALUES (5)",
    };

    (void) state;
    app_scope(&s, "rerun-cap");
    app_scope(&slow, "rerun-cap-slow");

    sql_ok(&slow, "CREATE TABLE t (x)");
    sql_ok(&s, "CREATE TABLE t (x)");
    sql_ok(&s, "CREATE TABLE bad (x)");
    sql_ok(&s, "CREATE TRIGGER bad_no BEFORE INSERT ON bad BEGIN "
               "SELECT RAISE(ROLLBACK, 'refused'); END");
    sql_ok(&s, "CREATE TABLE u (x UNIQUE)");
    sql_ok(&s, "INSERT INTO u VALUES (1)");

    spin = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
           "SELECT count(*) FROM c";
    r[0] = sql_req(PROVEND_OP_SQL_QUERY, &slow, 1, &spin);
    for (i = 1; i < 10; i++) {
        sql = stmts[i];
        r[i] = sql_req(PROVEND_OP_SQL_EXECUTE, &s, 1, &sql);
    }

    for (i = 0; i < 10; i++) {
        async_submit(r[i]);
    }
    async_wait();

    assert_int_equal(r[0]->status, PROVEND_ST_TIMEOUT);
    assert_int_equal(r[2]->status, PROVEND_ST_TIMEOUT);
    assert_int_equal(r[4]->status, PROVEND_ST_SQL_ERROR);
    assert_int_equal(r[6]->status, PROVEND_ST_SQL_ERROR);
    assert_int_equal(r[8]->status, PROVEND_ST_SQL_ERROR);
    for (i = 1; i < 10; i += 2) {
        if (r[i]->status != PROVEND_ST_STORAGE_ERROR) {
            fail_msg("request %zu: status %d, not storage_error", i,
                     r[i]->status);
        }
    }
    for (i = 0; i < 10; i++) {
        provend_storage_req_free(r[i]);
    }

    assert_int_equal(sql_int(&s, "SELECT count(*) FROM t"), 0);
    sql_ok(&s, "INSERT INTO t VALUES (6)");
    assert_int_equal(sql_int(&s, "SELECT count(*) FROM t"), 1);
}


/* ---- over the socket ----------------------------------------------------- */

typedef struct {
    char    dir[160];
    char    sock[200];
    char    log[200];
    pid_t   pid;
} node_t;


static void
node_start(node_t *n)
{
    int          fd, i;
    const char  *argv[12];

    snprintf(n->dir, sizeof(n->dir), "%s/node", top_dir);
    snprintf(n->sock, sizeof(n->sock), "%s/provend.sock", n->dir);
    snprintf(n->log, sizeof(n->log), "%s/provend.log", top_dir);

    argv[0] = provend_bin;
    argv[1] = "--data";
    argv[2] = n->dir;
    argv[3] = "--provider";
    argv[4] = "dev";
    argv[5] = "--log-level";
    argv[6] = "debug";
    argv[7] = "--kv-max-value";
    argv[8] = "100";
    argv[9] = NULL;

    n->pid = fork();
    assert_true(n->pid != -1);

    if (n->pid == 0) {
        fd = open(n->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd != -1) {
            dup2(fd, 2);
        }
        execv(provend_bin, (char **) argv);
        _exit(127);
    }

    for (i = 0; i < 1000; i++) {
        fd = try_connect(n->sock);
        if (fd != -1) {
            close(fd);
            return;
        }
        if (waitpid(n->pid, NULL, WNOHANG) == n->pid) {
            n->pid = 0;
            fail_msg("provend exited at start, see %s", n->log);
        }
        sleep_ms(10);
    }

    fail_msg("provend did not listen, see %s", n->log);
}


static int
node_stop(node_t *n)
{
    int  status, i;

    if (n->pid <= 0) {
        return -1;
    }

    kill(n->pid, SIGTERM);
    for (i = 0; i < 1000; i++) {
        if (waitpid(n->pid, &status, WNOHANG) == n->pid) {
            n->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        sleep_ms(10);
    }

    kill(n->pid, SIGKILL);
    waitpid(n->pid, NULL, 0);
    n->pid = 0;
    return -1;
}


static void
recv_exact(int fd, uint8_t *buf, size_t len)
{
    ssize_t        r;
    size_t         done;
    struct pollfd  pfd;

    for (done = 0; done < len; done += (size_t) r) {
        pfd.fd = fd;
        pfd.events = POLLIN;
        assert_int_equal(poll(&pfd, 1, IO_TIMEOUT_MS), 1);
        r = recv(fd, buf + done, len - done, 0);
        assert_true(r > 0);
    }
}


/* Sends req (consumed), returns the decoded response. */
static void
roundtrip(int fd, cbor_item_t *req, proven_response_t *res)
{
    char      err[PROVEN_ERR_LEN];
    size_t    len;
    uint8_t  *frame, header[PROVEN_FRAME_HEADER], *body;
    uint32_t  blen;

    assert_non_null(req);
    assert_int_equal(proven_frame_encode(req, &frame, &len, NULL, 0),
                     PROVEN_OK);
    cbor_decref(&req);
    send_all(fd, frame, len);
    free(frame);

    recv_exact(fd, header, sizeof(header));
    assert_int_equal(proven_frame_length(header, &blen, err, sizeof(err)),
                     PROVEN_OK);
    body = malloc(blen);
    assert_non_null(body);
    recv_exact(fd, body, blen);
    if (proven_response_decode(body, blen, res, err, sizeof(err))
        != PROVEN_OK)
    {
        free(body);
        fail_msg("bad response: %s", err);
    }
    free(body);
}


static cbor_item_t *
wire_req(uint64_t id, const char *op, const char *app)
{
    cbor_item_t  *req;

    req = proven_request_new(id, op);
    assert_non_null(req);
    if (app != NULL) {
        assert_int_equal(proven_cbor_map_put(req, "scope",
                                             scope_map(app, "app", NULL, NULL,
                                                       NULL, NULL)),
                         PROVEN_OK);
    }
    return req;
}


static void
put_text(cbor_item_t *m, const char *k, const char *v)
{
    assert_int_equal(proven_cbor_map_put(m, k, cbor_build_string(v)),
                     PROVEN_OK);
}


static void
expect_wire_error(int fd, cbor_item_t *req, const char *code)
{
    proven_response_t  res;

    roundtrip(fd, req, &res);
    assert_false(res.ok);
    if (strcmp(res.code, code) != 0) {
        fail_msg("expected %s, got %s: %s", code, res.code, res.message);
    }
    proven_response_free(&res);
}


/* The answer's "revision" and "value" (NULL when null), checked. */
static void
expect_wire_value(proven_response_t *res, int text, const char *value,
    uint64_t revision)
{
    uint64_t      rev;
    cbor_item_t  *v;

    if (!res->ok) {
        fail_msg("kv.get: %s %s", res->code, res->message);
    }
    assert_int_equal(proven_cbor_uint(proven_cbor_map_get(res->result,
                                                          "revision"),
                                      &rev), PROVEN_OK);
    assert_int_equal(rev, revision);

    v = proven_cbor_map_get(res->result, "value");
    assert_non_null(v);
    if (value == NULL) {
        assert_true(proven_cbor_is_null(v));
        return;
    }

    if (text) {
        assert_true(cbor_isa_string(v));
        assert_int_equal(cbor_string_length(v), strlen(value));
        assert_memory_equal(cbor_string_handle(v), value, strlen(value));
    } else {
        assert_true(cbor_isa_bytestring(v));
        assert_int_equal(cbor_bytestring_length(v), strlen(value));
        assert_memory_equal(cbor_bytestring_handle(v), value, strlen(value));
    }
}


static cbor_item_t *
kv_wire(uint64_t id, const char *op, cbor_item_t *scope, const char *type,
    const char *key, const char *value, int general)
{
    cbor_item_t  *req;

    req = proven_request_new(id, op);
    assert_non_null(req);
    assert_int_equal(proven_cbor_map_put(req, "scope", scope), PROVEN_OK);
    if (type != NULL) {
        put_text(req, "type", type);
    }
    put_text(req, "key", key);
    if (value != NULL) {
        assert_int_equal(proven_cbor_map_put(req, "value",
                             type != NULL && strcmp(type, "string") == 0
                             ? cbor_build_string(value)
                             : cbor_build_bytestring((const uint8_t *) value,
                                                     strlen(value))),
                         PROVEN_OK);
    }
    if (general) {
        /* unknown to the fast path, ignored by the general one */
        put_text(req, "note", "the general way");
    }
    return req;
}


/*
 * A plain kv.get or kv.set frame takes provend's fast path; the same
 * request with one more field goes the general way.  Both must answer
 * alike, and every refusal comes with the general way's error.
 */
static void
test_socket_fast_path(void **state)
{
    int                 fd, general;
    char                longkey[PROVEND_KV_KEY_MAX + 2];
    uint64_t            rev;
    node_t              n;
    cbor_item_t        *req;
    proven_response_t   res;

    (void) state;

    node_start(&n);
    fd = try_connect(n.sock);
    assert_true(fd != -1);

    /* sets by either way count the same revisions */
    for (general = 0; general < 2; general++) {
        req = kv_wire(1 + general, "kv.set",
                      scope_map("fast", "app", NULL, NULL, NULL, NULL),
                      NULL, "k", general ? "v-general" : "v-fast", general);
        roundtrip(fd, req, &res);
        if (!res.ok) {
            fail_msg("kv.set: %s %s", res.code, res.message);
        }
        assert_int_equal(proven_cbor_uint(proven_cbor_map_get(res.result,
                                                              "revision"),
                                          &rev), PROVEN_OK);
        assert_int_equal(rev, 1 + general);
        proven_response_free(&res);
    }

    /* gets by either way see the same value, present or missing */
    for (general = 0; general < 2; general++) {
        req = kv_wire(3, "kv.get",
                      scope_map("fast", "app", NULL, NULL, NULL, NULL),
                      "bytes", "k", NULL, general);
        roundtrip(fd, req, &res);
        assert_int_equal(res.id, 3);
        expect_wire_value(&res, 0, "v-general", 2);
        proven_response_free(&res);

        req = kv_wire(4, "kv.get",
                      scope_map("fast", "app", NULL, NULL, NULL, NULL),
                      NULL, "missing", NULL, general);
        roundtrip(fd, req, &res);
        expect_wire_value(&res, 0, NULL, 0);
        proven_response_free(&res);
    }

    /* a personal string store, written one way, read the other */
    for (general = 0; general < 2; general++) {
        req = kv_wire(5, "kv.set",
                      scope_map("fast", "personal", "alice", NULL, NULL,
                                NULL),
                      "string", general ? "g" : "f", "hers", general);
        roundtrip(fd, req, &res);
        assert_true(res.ok);
        proven_response_free(&res);

        req = kv_wire(6, "kv.get",
                      scope_map("fast", "personal", "alice", NULL, NULL,
                                NULL),
                      "string", general ? "g" : "f", NULL, !general);
        roundtrip(fd, req, &res);
        expect_wire_value(&res, 1, "hers", 1);
        proven_response_free(&res);

        req = kv_wire(7, "kv.get",
                      scope_map("fast", "personal", "bob", NULL, NULL, NULL),
                      "string", general ? "g" : "f", NULL, general);
        roundtrip(fd, req, &res);
        expect_wire_value(&res, 1, NULL, 0);
        proven_response_free(&res);
    }

    /* refusals, the same either way */
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';

    for (general = 0; general < 2; general++) {
        req = kv_wire(8, "kv.set",
                      scope_map("fast", "app", NULL, NULL, NULL, NULL),
                      NULL, "k", "stale", general);
        assert_int_equal(proven_cbor_map_put(req, "if_revision",
                                             cbor_build_uint8(1)), PROVEN_OK);
        expect_wire_error(fd, req, "revision_mismatch");

        req = kv_wire(9, "kv.get",
                      scope_map("fast", "app", NULL, NULL, NULL, NULL),
                      NULL, longkey, NULL, general);
        expect_wire_error(fd, req, "bad_request");

        req = kv_wire(10, "kv.get",
                      scope_map("fast", "app", NULL, NULL, NULL, NULL),
                      NULL, "", NULL, general);
        expect_wire_error(fd, req, "bad_request");

        req = kv_wire(11, "kv.get",
                      scope_map("Fast", "app", NULL, NULL, NULL, NULL),
                      NULL, "k", NULL, general);
        expect_wire_error(fd, req, "bad_request");

        req = kv_wire(12, "kv.get",
                      scope_map("fast", "personal", "al ice", NULL, NULL,
                                NULL),
                      NULL, "k", NULL, general);
        expect_wire_error(fd, req, "bad_request");

        /* the node takes values of at most 100 bytes */
        req = kv_wire(13, "kv.set",
                      scope_map("fast", "app", NULL, NULL, NULL, NULL),
                      NULL, "big", longkey, general);
        expect_wire_error(fd, req, "bad_request");

        req = kv_wire(14, "kv.set",
                      scope_map("fast", "app", NULL, NULL, NULL, NULL),
                      "string", "k", NULL, general);
        assert_int_equal(proven_cbor_map_put(req, "value",
                                             cbor_build_bytestring(
                                                 (const uint8_t *) "b", 1)),
                         PROVEN_OK);
        expect_wire_error(fd, req, "bad_request");
    }

    /* the value was not changed by any of them */
    req = kv_wire(15, "kv.get",
                  scope_map("fast", "app", NULL, NULL, NULL, NULL),
                  NULL, "k", NULL, 0);
    roundtrip(fd, req, &res);
    expect_wire_value(&res, 0, "v-general", 2);
    proven_response_free(&res);

    close(fd);
    assert_int_equal(node_stop(&n), 0);
}


static void
test_socket(void **state)
{
    int                 fd;
    char                big[200];
    node_t              n;
    cbor_item_t        *req, *v, *rows, *batch, *stmt;
    proven_response_t   res;

    (void) state;

    node_start(&n);
    fd = try_connect(n.sock);
    assert_true(fd != -1);

    /* kv.set + kv.get, string store */
    req = wire_req(1, "kv.set", "demo");
    put_text(req, "type", "string");
    put_text(req, "key", "greeting");
    put_text(req, "value", "hello");
    roundtrip(fd, req, &res);
    if (!res.ok) {
        fail_msg("kv.set: %s %s", res.code, res.message);
    }
    assert_int_equal(res.id, 1);
    proven_response_free(&res);

    req = wire_req(2, "kv.get", "demo");
    put_text(req, "type", "string");
    put_text(req, "key", "greeting");
    roundtrip(fd, req, &res);
    assert_true(res.ok);
    v = proven_cbor_map_get(res.result, "value");
    assert_true(cbor_isa_string(v));
    assert_int_equal(cbor_string_length(v), 5);
    assert_memory_equal(cbor_string_handle(v), "hello", 5);
    proven_response_free(&res);

    /* another app does not see it */
    req = wire_req(3, "kv.get", "other");
    put_text(req, "type", "string");
    put_text(req, "key", "greeting");
    roundtrip(fd, req, &res);
    assert_true(res.ok);
    assert_true(proven_cbor_is_null(proven_cbor_map_get(res.result,
                                                        "value")));
    proven_response_free(&res);

    /* sql.execute batch + sql.query with a param */
    req = wire_req(4, "sql.execute", "demo");
    batch = cbor_new_definite_array(2);
    stmt = cbor_new_definite_map(1);
    put_text(stmt, "sql", "CREATE TABLE t (x TEXT)");
    assert_true(cbor_array_push(batch, stmt));
    cbor_decref(&stmt);
    stmt = cbor_new_definite_map(2);
    put_text(stmt, "sql", "INSERT INTO t VALUES (?)");
    v = cbor_new_definite_array(1);
    assert_true(cbor_array_push(v, cbor_move(cbor_build_string("row"))));
    assert_int_equal(proven_cbor_map_put(stmt, "params", v), PROVEN_OK);
    assert_true(cbor_array_push(batch, stmt));
    cbor_decref(&stmt);
    assert_int_equal(proven_cbor_map_put(req, "batch", batch), PROVEN_OK);
    roundtrip(fd, req, &res);
    if (!res.ok) {
        fail_msg("sql.execute: %s %s", res.code, res.message);
    }
    proven_response_free(&res);

    req = wire_req(5, "sql.query", "demo");
    put_text(req, "sql", "SELECT x FROM t WHERE x = ?");
    v = cbor_new_definite_array(1);
    assert_true(cbor_array_push(v, cbor_move(cbor_build_string("row"))));
    assert_int_equal(proven_cbor_map_put(req, "params", v), PROVEN_OK);
    roundtrip(fd, req, &res);
    assert_true(res.ok);
    rows = proven_cbor_map_get(res.result, "rows");
    assert_int_equal(cbor_array_size(rows), 1);
    proven_response_free(&res);

    /* bad arguments: bad_request, the connection keeps serving */
    req = wire_req(6, "kv.get", NULL);
    put_text(req, "key", "k");
    expect_wire_error(fd, req, "bad_request");

    req = proven_request_new(7, "kv.get");
    assert_int_equal(proven_cbor_map_put(req, "scope",
                                         scope_map("demo", "team", NULL, NULL,
                                                   NULL, NULL)), PROVEN_OK);
    put_text(req, "key", "k");
    expect_wire_error(fd, req, "bad_request");

    req = wire_req(8, "kv.set", "demo");
    put_text(req, "key", "k");
    put_text(req, "value", "text for a bytes store");
    expect_wire_error(fd, req, "bad_request");

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    req = wire_req(9, "kv.set", "demo");
    put_text(req, "type", "string");
    put_text(req, "key", "k");
    put_text(req, "value", big);
    expect_wire_error(fd, req, "bad_request");

    req = wire_req(10, "sql.execute", "demo");
    put_text(req, "sql", "ATTACH DATABASE 'x' AS x");
    expect_wire_error(fd, req, "sql_denied");

    req = wire_req(11, "sql.query", "demo");
    put_text(req, "sql", "SELEKT");
    expect_wire_error(fd, req, "sql_error");

    req = wire_req(12, "kv.get", "demo");
    assert_int_equal(proven_cbor_map_put(req, "key",
                                         cbor_build_uint8(1)), PROVEN_OK);
    expect_wire_error(fd, req, "bad_request");

    req = wire_req(13, "kv.frobnicate", "demo");
    expect_wire_error(fd, req, "unknown_op");

    req = wire_req(14, "kv.get", "demo");
    put_text(req, "type", "string");
    put_text(req, "key", "greeting");
    roundtrip(fd, req, &res);
    assert_true(res.ok);
    proven_response_free(&res);

    close(fd);
    assert_int_equal(node_stop(&n), 0);

    /* after a restart the value is still there */
    node_start(&n);
    fd = try_connect(n.sock);
    assert_true(fd != -1);
    req = wire_req(15, "kv.get", "demo");
    put_text(req, "type", "string");
    put_text(req, "key", "greeting");
    roundtrip(fd, req, &res);
    assert_true(res.ok);
    v = proven_cbor_map_get(res.result, "value");
    assert_true(cbor_isa_string(v));
    {
        uint64_t  rev;

        assert_int_equal(proven_cbor_uint(proven_cbor_map_get(res.result,
                                                              "revision"),
                                          &rev), PROVEN_OK);
        assert_int_equal(rev, 1);
    }
    proven_response_free(&res);
    close(fd);
    assert_int_equal(node_stop(&n), 0);
}


/* ---- setup --------------------------------------------------------------- */


static int
group_setup(void **state)
{
    (void) state;

    snprintf(top_dir, sizeof(top_dir), "/tmp/storage-test-XXXXXX");
    if (mkdtemp(top_dir) == NULL) {
        return -1;
    }

    snprintf(data_dir, sizeof(data_dir), "%s/data", top_dir);
    if (mkdir(data_dir, 0700) != 0) {
        return -1;
    }

    memset(master, 0x5a, sizeof(master));
    backend_open();
    return 0;
}


static int
group_teardown(void **state)
{
    (void) state;

    provend_storage_close(st);
    st = NULL;

    if (getenv("PROVEND_TEST_KEEP") == NULL) {
        remove_tree(top_dir);
    } else {
        fprintf(stderr, "kept %s\n", top_dir);
    }

    return 0;
}


int
main(int argc, char **argv)
{
    char        *slash;
    const char  *bin;

    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_scope_rules),
        cmocka_unit_test(test_scope_canonical_unique),
        cmocka_unit_test(test_kv_basic),
        cmocka_unit_test(test_kv_if_revision),
        cmocka_unit_test(test_kv_keys_cursor),
        cmocka_unit_test(test_kv_types),
        cmocka_unit_test(test_kv_keystore),
        cmocka_unit_test(test_kv_limits),
        cmocka_unit_test(test_kv_isolation),
        cmocka_unit_test(test_kv_concurrent),
        cmocka_unit_test(test_kv_log_tampered),
        cmocka_unit_test(test_kv_log_reopen),
        cmocka_unit_test(test_kv_log_damaged_base),
        cmocka_unit_test(test_kv_memory_limit),
        cmocka_unit_test(test_sql_execute_query),
        cmocka_unit_test(test_sql_batch_atomic),
        cmocka_unit_test(test_sql_migrate),
        cmocka_unit_test(test_sql_denied),
        cmocka_unit_test(test_sql_timeout_and_size),
        cmocka_unit_test(test_sql_isolation),
        cmocka_unit_test(test_sql_virtual_tables),
        cmocka_unit_test(test_sql_changes),
        cmocka_unit_test(test_sql_reserved_rename),
        cmocka_unit_test(test_sql_result_bounds),
        cmocka_unit_test(test_sql_heap_limit),
        cmocka_unit_test(test_sql_deadline_per_request),
        cmocka_unit_test(test_kv_read_waits_for_commit),
        cmocka_unit_test(test_sql_rollback_spares_others),
        cmocka_unit_test(test_sql_rollback_rerun_bounded),
        cmocka_unit_test(test_socket),
        cmocka_unit_test(test_socket_fast_path),
    };

    (void) argc;

    bin = getenv("PROVEND_BIN");
    if (bin != NULL) {
        snprintf(provend_bin, sizeof(provend_bin), "%s", bin);
    } else {
        snprintf(provend_bin, sizeof(provend_bin), "%s", argv[0]);
        slash = strrchr(provend_bin, '/');
        if (slash == NULL) {
            snprintf(provend_bin, sizeof(provend_bin), "../bin/provend");
        } else {
            snprintf(slash + 1, sizeof(provend_bin)
                     - (size_t) (slash + 1 - provend_bin), "../bin/provend");
        }
    }

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
