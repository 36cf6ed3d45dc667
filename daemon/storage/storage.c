/*
 * Scopes (validation, canonical strings) and what every backend shares:
 * requests, status names, dispatch by op and a blocking call for tests.
 */

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage.h"



/* ---- scopes -------------------------------------------------------------- */

static int
provend_chars_in(const char *s, size_t len, const char *extra, int upper)
{
    size_t  i;
    char    c;

    for (i = 0; i < len; i++) {
        c = s[i];
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
            || (upper && c >= 'A' && c <= 'Z')
            || (c != '\0' && strchr(extra, c) != NULL))
        {
            continue;
        }
        return 0;
    }

    return 1;
}


int
provend_name_valid(const char *name, size_t len)
{
    return len >= 1 && len <= PROVEND_NAME_MAX
           && provend_chars_in(name, len, "_-", 0);
}


/* A text field of 1..max bytes copied into out (max + 1 bytes). */
static int
provend_scope_text(const cbor_item_t *map, const char *field, size_t max,
    char *out, char *err, size_t errlen)
{
    char         *s;
    size_t        len;
    cbor_item_t  *item;

    item = proven_cbor_map_get(map, field);
    if (item == NULL || !cbor_isa_string(item)) {
        proven_errf(err, errlen, "scope \"%s\" must be text", field);
        return PROVEN_ERR;
    }

    if (proven_cbor_text(item, max, &s, &len) != PROVEN_OK) {
        proven_errf(err, errlen, "scope \"%s\" is longer than %zu bytes", field,
                    max);
        return PROVEN_ERR;
    }

    if (len == 0 || memchr(s, '\0', len) != NULL) {
        free(s);
        proven_errf(err, errlen, "scope \"%s\" must not be empty", field);
        return PROVEN_ERR;
    }

    memcpy(out, s, len + 1);
    free(s);
    return PROVEN_OK;
}


/* Only the fields the kind allows; any other key is an error. */
static int
provend_scope_fields(const cbor_item_t *map, const char *const *allowed,
    char *err, size_t errlen)
{
    size_t              i, j, n;
    struct cbor_pair   *pairs;
    unsigned char      *k;
    size_t              klen;

    n = cbor_map_size(map);
    pairs = cbor_map_handle(map);

    for (i = 0; i < n; i++) {
        if (!cbor_isa_string(pairs[i].key)
            || !cbor_string_is_definite(pairs[i].key))
        {
            proven_errf(err, errlen, "scope keys must be text");
            return PROVEN_ERR;
        }

        k = cbor_string_handle(pairs[i].key);
        klen = cbor_string_length(pairs[i].key);

        for (j = 0; allowed[j] != NULL; j++) {
            if (strlen(allowed[j]) == klen && memcmp(allowed[j], k, klen) == 0)
            {
                break;
            }
        }

        if (allowed[j] == NULL) {
            proven_errf(err, errlen, "scope field \"%.*s\" is not allowed here",
                        (int) (klen > 32 ? 32 : klen), k);
            return PROVEN_ERR;
        }
    }

    return PROVEN_OK;
}


int
provend_radix_nf_id_ok(const char *id)
{
    size_t  len, i;

    len = strlen(id);
    if (len < 3) {
        return 0;
    }
    switch (id[0]) {
    case '#':                           /* a u64: "#0#", "#12#" */
        return id[len - 1] == '#' && len <= 22
               && strspn(id + 1, "0123456789") == len - 2
               && (id[1] != '0' || len == 3)
               && (len < 22
                   || strncmp(id + 1, "18446744073709551615", 20) <= 0);
    case '<':                           /* 1 to 64 of [A-Za-z0-9_] */
        if (id[len - 1] != '>' || len > 66) {
            return 0;
        }
        for (i = 1; i < len - 1; i++) {
            if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A'
                  && id[i] <= 'Z') || (id[i] >= '0' && id[i] <= '9')
                  || id[i] == '_'))
            {
                return 0;
            }
        }
        return 1;
    case '[':                           /* 1 to 64 bytes, lowercase hex */
        return id[len - 1] == ']' && len <= 130 && len % 2 == 0
               && strspn(id + 1, "0123456789abcdef") == len - 2;
    case '{':                           /* a RUID: 4 groups of 16 hex */
        if (len != 69 || id[68] != '}') {
            return 0;
        }
        for (i = 1; i < 68; i++) {
            if (i % 17 == 0 ? id[i] != '-'
                : strchr("0123456789abcdef", id[i]) == NULL || id[i] == '\0')
            {
                return 0;
            }
        }
        return 1;
    default:
        return 0;
    }
}


static int
provend_scope_nft(const cbor_item_t *nft, provend_scope_t *scope, char *err,
    size_t errlen)
{
    size_t  len, i;
    char   *t;

    static const char *const  fields[] = { "chain", "contract", "token",
                                           NULL };

    if (nft == NULL || !cbor_isa_map(nft)) {
        proven_errf(err, errlen,
                    "an nft scope needs \"nft\": {chain, contract, "
                    "token}");
        return PROVEN_ERR;
    }

    if (provend_scope_fields(nft, fields, err, errlen) != PROVEN_OK
        || provend_scope_text(nft, "chain", PROVEND_CHAIN_MAX, scope->chain,
                              err, errlen) != PROVEN_OK
        || provend_scope_text(nft, "contract", PROVEND_CONTRACT_MAX,
                              scope->contract, err, errlen) != PROVEN_OK
        || provend_scope_text(nft, "token", PROVEND_TOKEN_MAX, scope->token,
                              err, errlen) != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    if (!provend_chars_in(scope->chain, strlen(scope->chain), "-", 0)) {
        proven_errf(err, errlen, "nft chain must be [a-z0-9-]");
        return PROVEN_ERR;
    }

    len = strlen(scope->contract);
    if (!provend_chars_in(scope->contract, len, "_.:-", 1)) {
        proven_errf(err, errlen, "nft contract must be [A-Za-z0-9_.:-]");
        return PROVEN_ERR;
    }

    /* An EVM address is one contract however it is cased. */
    if (len > 2 && scope->contract[0] == '0'
        && (scope->contract[1] == 'x' || scope->contract[1] == 'X')
        && strspn(scope->contract + 2, "0123456789abcdefABCDEF") == len - 2)
    {
        for (i = 0; i < len; i++) {
            if (scope->contract[i] >= 'A' && scope->contract[i] <= 'Z') {
                scope->contract[i] = (char) (scope->contract[i] + 32);
            }
        }
    }

    if (strncmp(scope->chain, "radix-", 6) == 0) {
        if (!provend_radix_nf_id_ok(scope->token)) {
            proven_errf(err, errlen, "a Radix nft token must be a "
                        "non-fungible id: #n#, <string>, [hex] or {ruid}");
            return PROVEN_ERR;
        }
        return PROVEN_OK;
    }

    len = strlen(scope->token);
    if (strspn(scope->token, "0123456789") != len) {
        proven_errf(err, errlen, "nft token must be decimal digits");
        return PROVEN_ERR;
    }

    for (t = scope->token; *t == '0' && t[1] != '\0'; t++) {
        /* leading zeros: "007" and "7" are one token */
    }
    memmove(scope->token, t, strlen(t) + 1);

    return PROVEN_OK;
}


int
provend_scope_parse(const cbor_item_t *item, provend_scope_t *scope,
    char *err, size_t errlen)
{
    char          kind[16];
    cbor_item_t  *k;

    static const char *const  app_fields[] = { "app", "kind", NULL };
    static const char *const  personal_fields[] = { "app", "kind",
                                                    "identity", NULL };
    static const char *const  nft_fields[] = { "app", "kind", "nft", NULL };

    memset(scope, 0, sizeof(*scope));

    if (item == NULL || !cbor_isa_map(item)) {
        proven_errf(err, errlen, "\"scope\" must be a map");
        return PROVEN_ERR;
    }

    k = proven_cbor_map_get(item, "kind");
    if (k == NULL) {
        snprintf(kind, sizeof(kind), "app");
    } else if (provend_scope_text(item, "kind", sizeof(kind) - 1, kind, err,
                                  errlen) != PROVEN_OK)
    {
        proven_errf(err, errlen, "scope \"kind\" must be app, personal or nft");
        return PROVEN_ERR;
    }

    if (strcmp(kind, "app") == 0) {
        scope->kind = PROVEND_SCOPE_APP;
        if (provend_scope_fields(item, app_fields, err, errlen)
            != PROVEN_OK)
        {
            return PROVEN_ERR;
        }

    } else if (strcmp(kind, "personal") == 0) {
        scope->kind = PROVEND_SCOPE_PERSONAL;
        if (provend_scope_fields(item, personal_fields, err, errlen)
            != PROVEN_OK
            || provend_scope_text(item, "identity", PROVEND_IDENTITY_MAX,
                                  scope->identity, err, errlen) != PROVEN_OK)
        {
            return PROVEN_ERR;
        }

        if (!provend_identity_valid(scope->identity,
                                    strlen(scope->identity)))
        {
            proven_errf(err, errlen, "identity must be [A-Za-z0-9._:@-]");
            return PROVEN_ERR;
        }

    } else if (strcmp(kind, "nft") == 0) {
        scope->kind = PROVEND_SCOPE_NFT;
        if (provend_scope_fields(item, nft_fields, err, errlen) != PROVEN_OK
            || provend_scope_nft(proven_cbor_map_get(item, "nft"), scope,
                                 err, errlen) != PROVEN_OK)
        {
            return PROVEN_ERR;
        }

    } else {
        proven_errf(err, errlen, "unknown scope kind \"%s\"", kind);
        return PROVEN_ERR;
    }

    if (provend_scope_text(item, "app", PROVEND_NAME_MAX, scope->app, err,
                           errlen) != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    if (!provend_name_valid(scope->app, strlen(scope->app))) {
        proven_errf(err, errlen, "app must be 1..%d of [a-z0-9_-]",
                    PROVEND_NAME_MAX);
        return PROVEN_ERR;
    }

    if (scope->app[0] == '_') {
        proven_errf(err, errlen,
                    "app names starting with _ are the node's own");
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


/*
 * Appends "<sep><tag>:<len>:<value>"; PROVEN_ERR when out is too small.
 * By hand rather than snprintf(): it runs for every KV request.
 */
static int
provend_canon_add(char *out, size_t outlen, size_t *pos, const char *sep,
    const char *tag, const char *value)
{
    char    digits[24];
    size_t  seplen, taglen, vlen, nd, v, need;

    seplen = strlen(sep);
    taglen = strlen(tag);
    vlen = strlen(value);

    nd = 0;
    v = vlen;
    do {
        digits[nd++] = (char) ('0' + v % 10);
        v /= 10;
    } while (v != 0);

    need = seplen + taglen + 1 + nd + 1 + vlen;
    if (need >= outlen - *pos) {
        return PROVEN_ERR;
    }

    out += *pos;
    memcpy(out, sep, seplen);
    out += seplen;
    memcpy(out, tag, taglen);
    out += taglen;
    *out++ = ':';
    while (nd > 0) {
        *out++ = digits[--nd];
    }
    *out++ = ':';
    memcpy(out, value, vlen);
    out[vlen] = '\0';

    *pos += need;
    return PROVEN_OK;
}


int
provend_identity_valid(const char *identity, size_t len)
{
    return len >= 1 && len <= PROVEND_IDENTITY_MAX
           && provend_chars_in(identity, len, "._:@-", 1);
}


int
provend_scope_canonical(const provend_scope_t *scope, const char *what,
    const char *name, char *out, size_t outlen, size_t *len)
{
    int     rc;
    size_t  pos;

    if (outlen == 0 || !provend_name_valid(name, strlen(name))) {
        return PROVEN_ERR;
    }

    pos = 0;
    out[0] = '\0';

    rc = provend_canon_add(out, outlen, &pos, "v1|", "app", scope->app);

    switch (scope->kind) {

    case PROVEND_SCOPE_APP:
        break;

    case PROVEND_SCOPE_PERSONAL:
        rc |= provend_canon_add(out, outlen, &pos, "|", "personal",
                                scope->identity);
        break;

    case PROVEND_SCOPE_NFT:
        rc |= provend_canon_add(out, outlen, &pos, "|", "nft", scope->chain);
        rc |= provend_canon_add(out, outlen, &pos, "|", "contract",
                                scope->contract);
        rc |= provend_canon_add(out, outlen, &pos, "|", "token",
                                scope->token);
        break;

    default:
        return PROVEN_ERR;
    }

    rc |= provend_canon_add(out, outlen, &pos, "|", what, name);
    if (rc != PROVEN_OK) {
        return PROVEN_ERR;
    }

    if (len != NULL) {
        *len = pos;
    }

    return PROVEN_OK;
}


/* ---- plain kv.get and kv.set frames -------------------------------------- */

#define PROVEND_PLAIN_ID     0x01
#define PROVEND_PLAIN_OP     0x02
#define PROVEND_PLAIN_SCOPE  0x04
#define PROVEND_PLAIN_STORE  0x08
#define PROVEND_PLAIN_KEY    0x10
#define PROVEND_PLAIN_TYPE   0x20
#define PROVEND_PLAIN_VALUE  0x40
#define PROVEND_PLAIN_IF_REVISION  0x80
#define PROVEND_PLAIN_NEEDED (PROVEND_PLAIN_ID | PROVEND_PLAIN_OP               \
                             | PROVEND_PLAIN_SCOPE | PROVEND_PLAIN_KEY)

static int
provend_plain_is(const uint8_t *s, size_t len, const char *word)
{
    return strlen(word) == len && memcmp(s, word, len) == 0;
}


/* Text of 1..max bytes without NUL, copied with a NUL into out. */
static int
provend_plain_text(proven_cbor_span_t *r, char *out, size_t max)
{
    size_t          len;
    const uint8_t  *s;

    if (proven_cbor_span_string(r, PROVEN_CBOR_TEXT, &s, &len) != PROVEN_OK
        || len == 0 || len > max || memchr(s, '\0', len) != NULL)
    {
        return PROVEN_ERR;
    }

    memcpy(out, s, len);
    out[len] = '\0';
    return PROVEN_OK;
}


static int
provend_plain_scope(proven_cbor_span_t *r, provend_scope_t *scope)
{
    int             seen;
    char            kind[16];
    size_t          len;
    uint64_t        n, i;
    const uint8_t  *k;

    if (proven_cbor_span_map(r, &n) != PROVEN_OK) {
        return PROVEN_ERR;
    }

    seen = 0;
    scope->kind = PROVEND_SCOPE_APP;

    for (i = 0; ; i++) {
        if (n == PROVEN_CBOR_INDEFINITE ? proven_cbor_span_break(r)
                                        : i == n)
        {
            break;
        }

        if (i == 3 || proven_cbor_span_string(r, PROVEN_CBOR_TEXT, &k, &len)
            != PROVEN_OK)
        {
            return PROVEN_ERR;
        }

        if (provend_plain_is(k, len, "app") && !(seen & 1)) {
            seen |= 1;
            if (provend_plain_text(r, scope->app, PROVEND_NAME_MAX)
                != PROVEN_OK)
            {
                return PROVEN_ERR;
            }

        } else if (provend_plain_is(k, len, "kind") && !(seen & 2)) {
            seen |= 2;
            if (provend_plain_text(r, kind, sizeof(kind) - 1) != PROVEN_OK) {
                return PROVEN_ERR;
            }
            if (strcmp(kind, "personal") == 0) {
                scope->kind = PROVEND_SCOPE_PERSONAL;
            } else if (strcmp(kind, "app") != 0) {
                return PROVEN_ERR;
            }

        } else if (provend_plain_is(k, len, "identity") && !(seen & 4)) {
            seen |= 4;
            if (provend_plain_text(r, scope->identity, PROVEND_IDENTITY_MAX)
                != PROVEN_OK)
            {
                return PROVEN_ERR;
            }

        } else {
            return PROVEN_ERR;
        }
    }

    /* The rules of provend_scope_parse(), for these two kinds. */
    if (!(seen & 1) || !provend_name_valid(scope->app, strlen(scope->app))
        || scope->app[0] == '_')
    {
        return PROVEN_ERR;
    }

    if (scope->kind == PROVEND_SCOPE_PERSONAL) {
        return (seen & 4) && provend_identity_valid(scope->identity,
                                                    strlen(scope->identity))
               ? PROVEN_OK : PROVEN_ERR;
    }

    return (seen & 4) ? PROVEN_ERR : PROVEN_OK;
}


int
provend_kv_plain_parse(const uint8_t *body, size_t len, provend_kv_plain_t *f)
{
    int                 major, seen, bit;
    char                type[8];
    size_t              klen;
    uint64_t            n, i;
    const uint8_t      *k;
    proven_cbor_span_t  r;

    r.p = body;
    r.end = body + len;
    seen = 0;
    memset(f, 0, sizeof(*f));
    f->type = PROVEND_KV_BYTES;
    memcpy(f->store, "default", sizeof("default"));  /* as requests start */

    if (proven_cbor_span_map(&r, &n) != PROVEN_OK) {
        return PROVEN_ERR;
    }

    for (i = 0; ; i++) {
        if (n == PROVEN_CBOR_INDEFINITE ? proven_cbor_span_break(&r)
                                        : i == n)
        {
            break;
        }

        if (i == 8
            || proven_cbor_span_string(&r, PROVEN_CBOR_TEXT, &k, &klen)
               != PROVEN_OK)
        {
            return PROVEN_ERR;
        }

        if (provend_plain_is(k, klen, "id")) {
            bit = PROVEND_PLAIN_ID;
            if (proven_cbor_span_head(&r, &major, &f->id) != PROVEN_OK
                || major != PROVEN_CBOR_UINT)
            {
                return PROVEN_ERR;
            }

        } else if (provend_plain_is(k, klen, "op")) {
            bit = PROVEND_PLAIN_OP;
            if (proven_cbor_span_string(&r, PROVEN_CBOR_TEXT, &k, &klen)
                != PROVEN_OK)
            {
                return PROVEN_ERR;
            }
            if (provend_plain_is(k, klen, "kv.set")) {
                f->set = 1;
            } else if (!provend_plain_is(k, klen, "kv.get")) {
                return PROVEN_ERR;
            }

        } else if (provend_plain_is(k, klen, "scope")) {
            bit = PROVEND_PLAIN_SCOPE;
            if (provend_plain_scope(&r, &f->scope) != PROVEN_OK) {
                return PROVEN_ERR;
            }

        } else if (provend_plain_is(k, klen, "store")) {
            bit = PROVEND_PLAIN_STORE;
            if (provend_plain_text(&r, f->store, PROVEND_NAME_MAX)
                != PROVEN_OK
                || !provend_name_valid(f->store, strlen(f->store)))
            {
                return PROVEN_ERR;
            }

        } else if (provend_plain_is(k, klen, "key")) {
            bit = PROVEND_PLAIN_KEY;
            if (r.p >= r.end
                || proven_cbor_span_string(&r, (*r.p >> 5) == PROVEN_CBOR_TEXT
                                               ? PROVEN_CBOR_TEXT
                                               : PROVEN_CBOR_BYTES,
                                           &f->key, &f->key_len) != PROVEN_OK
                || f->key_len == 0 || f->key_len > PROVEND_KV_KEY_MAX)
            {
                return PROVEN_ERR;
            }

        } else if (provend_plain_is(k, klen, "type")) {
            bit = PROVEND_PLAIN_TYPE;
            if (provend_plain_text(&r, type, sizeof(type) - 1) != PROVEN_OK) {
                return PROVEN_ERR;
            }
            if (strcmp(type, "string") == 0) {
                f->type = PROVEND_KV_STRING;
            } else if (strcmp(type, "bytes") != 0) {
                return PROVEN_ERR;       /* key stores go the general way */
            }

        } else if (provend_plain_is(k, klen, "value")) {
            bit = PROVEND_PLAIN_VALUE;
            if (r.p >= r.end) {
                return PROVEN_ERR;
            }
            f->value_major = *r.p >> 5;
            if (proven_cbor_span_string(&r, f->value_major, &f->value,
                                        &f->value_len) != PROVEN_OK)
            {
                return PROVEN_ERR;
            }

        } else if (provend_plain_is(k, klen, "if_revision")) {
            bit = PROVEND_PLAIN_IF_REVISION;
            f->has_if_revision = 1;
            if (proven_cbor_span_head(&r, &major, &f->if_revision)
                != PROVEN_OK || major != PROVEN_CBOR_UINT)
            {
                return PROVEN_ERR;
            }

        } else {
            return PROVEN_ERR;
        }

        if (seen & bit) {
            return PROVEN_ERR;
        }
        seen |= bit;
    }


    if (r.p != r.end
        || (seen & PROVEND_PLAIN_NEEDED) != PROVEND_PLAIN_NEEDED)
    {
        return PROVEN_ERR;
    }

    if (f->set) {
        /* a value of the store's kind */
        return (seen & PROVEND_PLAIN_VALUE)
               && f->value_major == (f->type == PROVEND_KV_STRING
                                     ? PROVEN_CBOR_TEXT : PROVEN_CBOR_BYTES)
               ? PROVEN_OK : PROVEN_ERR;
    }

    return seen & (PROVEND_PLAIN_VALUE | PROVEND_PLAIN_IF_REVISION)
           ? PROVEN_ERR : PROVEN_OK;
}


/* ---- requests ------------------------------------------------------------ */

const char *
provend_storage_status_name(provend_storage_status_t status)
{
    static const char *const  names[] = {
        "ok", "bad_request", "revision_mismatch", "not_found", "sql_error",
        "sql_denied", "too_large", "timeout", "storage_error", "internal"
    };

    if ((size_t) status >= sizeof(names) / sizeof(names[0])) {
        return "internal";
    }

    return names[status];
}


provend_storage_req_t *
provend_storage_req_new(provend_storage_op_t op)
{
    provend_storage_req_t  *req;

    req = calloc(1, sizeof(*req));
    if (req == NULL) {
        return NULL;
    }

    provend_storage_req_init(req, op);
    return req;
}


void
provend_storage_req_init(provend_storage_req_t *req, provend_storage_op_t op)
{
    req->op = op;
    memcpy(req->name, "default", sizeof("default"));
}


void
provend_storage_req_free(provend_storage_req_t *req)
{
    size_t  i, j;

    if (req == NULL) {
        return;
    }

    for (i = 0; i < req->nstmts; i++) {
        for (j = 0; j < req->stmts[i].nparams; j++) {
            free(req->stmts[i].params[j].data);
        }
        free(req->stmts[i].params);
        free(req->stmts[i].sql);
    }

    free(req->stmts);
    free(req->key);
    free(req->value);
    free(req->prefix);
    free(req->message);
    free(req->cursor);

    if (req->result != NULL) {
        cbor_decref(&req->result);
    }

    free(req);
}


void
provend_storage_req_fail(provend_storage_req_t *req,
    provend_storage_status_t status, const char *fmt, ...)
{
    va_list  ap;

    req->status = status;

    va_start(ap, fmt);
    vsnprintf(req->error, sizeof(req->error), fmt, ap);
    va_end(ap);

    if (req->result != NULL) {
        cbor_decref(&req->result);
    }
}


/* ---- backends ------------------------------------------------------------ */

void
provend_storage_submit(provend_storage_t *st, provend_storage_req_t *req)
{
    provend_storage_op_pt  fn;

    switch (req->op) {
    case PROVEND_OP_KV_GET:       fn = st->kv_get; break;
    case PROVEND_OP_KV_SET:       fn = st->kv_set; break;
    case PROVEND_OP_KV_DELETE:    fn = st->kv_delete; break;
    case PROVEND_OP_KV_KEYS:      fn = st->kv_keys; break;
    case PROVEND_OP_KV_SIGN:      fn = st->kv_sign; break;
    case PROVEND_OP_SQL_EXECUTE:  fn = st->sql_execute; break;
    case PROVEND_OP_SQL_QUERY:    fn = st->sql_query; break;
    case PROVEND_OP_SQL_MIGRATE:  fn = st->sql_migrate; break;
    default:                      fn = NULL; break;
    }

    if (fn == NULL) {
        provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                 "the %s backend does not do this", st->name);
        req->done(req);
        return;
    }

    fn(st, req);
}


void
provend_storage_hold(provend_storage_t *st)
{
    if (st->hold != NULL) {
        st->hold(st);
    }
}


void
provend_storage_release(provend_storage_t *st)
{
    if (st->release != NULL) {
        st->release(st);
    }
}


typedef struct {
    pthread_mutex_t  lock;
    pthread_cond_t   cond;
    int              answered;
} provend_storage_wait_t;


static void
provend_storage_wake(provend_storage_req_t *req)
{
    provend_storage_wait_t  *w;

    w = req->data;

    pthread_mutex_lock(&w->lock);
    w->answered = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}


provend_storage_status_t
provend_storage_call(provend_storage_t *st, provend_storage_req_t *req)
{
    void                    *data;
    void                   (*done)(provend_storage_req_t *);
    provend_storage_wait_t   w;

    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    w.answered = 0;

    data = req->data;
    done = req->done;
    req->data = &w;
    req->done = provend_storage_wake;
    req->blocking = 1;                /* a thread waits: never held */

    provend_storage_submit(st, req);

    pthread_mutex_lock(&w.lock);
    while (!w.answered) {
        pthread_cond_wait(&w.cond, &w.lock);
    }
    pthread_mutex_unlock(&w.lock);

    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.lock);

    req->data = data;
    req->done = done;
    return req->status;
}


void
provend_storage_close(provend_storage_t *st)
{
    if (st != NULL) {
        st->close(st);
    }
}


/* ---- the node's own databases ------------------------------------------ */

provend_storage_req_t *
provend_storage_own_sql(provend_storage_op_t op, const char *db,
    size_t nstmts)
{
    provend_storage_req_t  *req;

    req = provend_storage_req_new(op);
    if (req == NULL) {
        return NULL;
    }

    req->scope.kind = PROVEND_SCOPE_APP;
    snprintf(req->scope.app, sizeof(req->scope.app), PROVEND_OWN_SCOPE);
    snprintf(req->name, sizeof(req->name), "%s", db);

    req->stmts = calloc(nstmts, sizeof(*req->stmts));
    if (req->stmts == NULL) {
        provend_storage_req_free(req);
        return NULL;
    }
    req->nstmts = nstmts;
    return req;
}


int
provend_storage_stmt(provend_storage_req_t *req, size_t i, const char *sql,
    size_t nparams)
{
    provend_sql_stmt_t  *s;

    s = &req->stmts[i];
    s->sql = strdup(sql);
    s->sql_len = strlen(sql);
    s->params = nparams ? calloc(nparams, sizeof(*s->params)) : NULL;
    s->nparams = nparams;
    return s->sql != NULL && (nparams == 0 || s->params != NULL)
           ? PROVEN_OK : PROVEN_ERR;
}


int
provend_storage_param(provend_sql_stmt_t *s, size_t i,
    provend_sql_type_t type, const void *data, size_t len)
{
    s->params[i].type = type;
    s->params[i].data = malloc(len + 1);
    if (s->params[i].data == NULL) {
        return PROVEN_ERR;
    }
    memcpy(s->params[i].data, data, len);
    s->params[i].data[len] = '\0';
    s->params[i].len = len;
    return PROVEN_OK;
}


void
provend_storage_param_int(provend_sql_stmt_t *s, size_t i, int64_t v)
{
    s->params[i].type = PROVEND_SQL_INTEGER;
    s->params[i].i = v;
}
