/*
 * A block's logs, proved: its receipts as the endpoint gives them (JSON),
 * encoded here as consensus encodes them (EIP-2718 typed receipts, RLP),
 * put in a trie keyed by their index, whose root must be the receipts
 * root of a header this node hashed itself.  And the header's logs bloom,
 * which says for certain which blocks hold no log of an address or topic.
 * See eth.h.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proven.h"
#include "eth.h"


/* Above what consensus lets a block of 36M gas hold: 1714 transactions
 * (21000 gas each), 96000 logs (375 each), 4.5 MB of log data (8 a
 * byte); what exceeds them is no block's. */
#define RECEIPTS_MAX      10000
#define LOGS_MAX          100000
#define LOG_DATA_MAX      (8 * 1024 * 1024)


/* ---- an RLP writer --------------------------------------------------------- */

typedef struct {
    uint8_t  *p;
    size_t    len, cap;
    int       failed;                  /* out of memory: all later no-ops */
} rlp_buf_t;


static uint8_t *
rlp_room(rlp_buf_t *b, size_t n)
{
    size_t    cap;
    uint8_t  *p;

    if (b->failed) {
        return NULL;
    }
    if (b->cap - b->len < n) {
        cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            cap *= 2;
        }
        p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = 1;
            return NULL;
        }
        b->p = p;
        b->cap = cap;
    }
    return b->p + b->len;
}


/* The head of an item of len bytes (base 0x80 a string, 0xc0 a list). */
static size_t
rlp_head(uint8_t head[9], size_t len, unsigned base)
{
    size_t  n, i;

    if (len < 56) {
        head[0] = (uint8_t) (base + len);
        return 1;
    }
    for (n = 0; n < 8 && (len >> (8 * n)) != 0; n++) {
        /* bytes of the length */
    }
    head[0] = (uint8_t) (base + 55 + n);
    for (i = 0; i < n; i++) {
        head[1 + i] = (uint8_t) (len >> (8 * (n - 1 - i)));
    }
    return 1 + n;
}


static void
rlp_raw(rlp_buf_t *b, const void *data, size_t len)
{
    uint8_t  *p;

    p = rlp_room(b, len);
    if (p != NULL && len > 0) {
        memcpy(p, data, len);
        b->len += len;
    }
}


static void
rlp_string(rlp_buf_t *b, const uint8_t *data, size_t len)
{
    size_t   n;
    uint8_t  head[9];

    if (len == 1 && data[0] < 0x80) {
        rlp_raw(b, data, 1);
        return;
    }
    n = rlp_head(head, len, 0x80);
    rlp_raw(b, head, n);
    rlp_raw(b, data, len);
}


/* The items written since mark become one list. */
static void
rlp_list_close(rlp_buf_t *b, size_t mark)
{
    size_t    n, body;
    uint8_t   head[9], *p;

    body = b->len - mark;
    n = rlp_head(head, body, 0xc0);
    p = rlp_room(b, n);
    if (p == NULL) {
        return;
    }
    memmove(b->p + mark + n, b->p + mark, body);
    memcpy(b->p + mark, head, n);
    b->len += n;
}


/* ---- the logs bloom ------------------------------------------------------- */

int
provend_eth_bloom_has(const uint8_t bloom[256], const uint8_t *data,
    size_t len)
{
    int       i;
    unsigned  bit;
    uint8_t   h[32];

    provend_keccak256(data, len, h);
    for (i = 0; i < 6; i += 2) {
        bit = ((unsigned) h[i] << 8 | h[i + 1]) & 2047;
        if ((bloom[255 - bit / 8] & (1u << (bit % 8))) == 0) {
            return 0;
        }
    }
    return 1;
}


/* ---- an ordered trie's root ------------------------------------------------- */

typedef struct {
    uint8_t         key[3];            /* rlp(index): 3 bytes at most here */
    size_t          key_len;
    const uint8_t  *value;
    size_t          value_len;
} trie_item_t;


static unsigned
key_nibble(const trie_item_t *it, size_t i)
{
    return i % 2 == 0 ? it->key[i / 2] >> 4 : it->key[i / 2] & 0x0f;
}


static int
trie_item_cmp(const void *a, const void *b)
{
    const trie_item_t  *x = a, *y = b;
    size_t              n;
    int                 c;

    n = x->key_len < y->key_len ? x->key_len : y->key_len;
    c = memcmp(x->key, y->key, n);
    return c != 0 ? c : (int) x->key_len - (int) y->key_len;
}


/* Nibbles from..to of it's key, hex-prefixed (leaf or not). */
static void
trie_hp(rlp_buf_t *b, const trie_item_t *it, size_t from, size_t to,
    int leaf)
{
    size_t   i, n, o;
    uint8_t  hp[8];

    n = to - from;
    memset(hp, 0, sizeof(hp));
    hp[0] = (uint8_t) ((leaf ? 2 : 0) + n % 2) << 4;
    o = n % 2 == 1 ? 1 : 2;
    for (i = 0; i < n; i++) {
        hp[(o + i) / 2] |= (uint8_t) (key_nibble(it, from + i)
                                      << ((o + i) % 2 == 0 ? 4 : 0));
    }
    rlp_string(b, hp, (o + n) / 2);
}


static void trie_node(rlp_buf_t *b, const trie_item_t *items, size_t n,
    size_t depth);


/* A reference to the node of items: itself under 32 bytes, else its hash. */
static void
trie_ref(rlp_buf_t *b, const trie_item_t *items, size_t n, size_t depth)
{
    size_t   mark, len;
    uint8_t  h[32];

    mark = b->len;
    trie_node(b, items, n, depth);
    if (b->failed) {
        return;
    }
    len = b->len - mark;
    if (len >= 32) {
        provend_keccak256(b->p + mark, len, h);
        b->len = mark;
        rlp_string(b, h, 32);
    }
}


/* The node holding items (sorted, n > 0), their keys the same to depth. */
static void
trie_node(rlp_buf_t *b, const trie_item_t *items, size_t n, size_t depth)
{
    size_t    mark, common, i, j, nibbles;
    unsigned  c;

    mark = b->len;
    nibbles = items[0].key_len * 2;
    if (n == 1) {
        trie_hp(b, &items[0], depth, nibbles, 1);
        rlp_string(b, items[0].value, items[0].value_len);
        rlp_list_close(b, mark);
        return;
    }

    /* the nibbles all share past depth: an extension */
    for (common = depth; ; common++) {
        if (common >= items[0].key_len * 2
            || common >= items[n - 1].key_len * 2
            || key_nibble(&items[0], common)
               != key_nibble(&items[n - 1], common))
        {
            break;                      /* sorted: first and last suffice */
        }
    }
    if (common > depth) {
        trie_hp(b, &items[0], depth, common, 0);
        trie_ref(b, items, n, common);
        rlp_list_close(b, mark);
        return;
    }

    /* a branch: a child per nibble, and the value of a key ending here */
    i = 0;
    if (items[0].key_len * 2 == depth) {
        i = 1;                          /* sorts first: a prefix of all */
    }
    for (c = 0; c < 16; c++) {
        for (j = i; j < n && key_nibble(&items[j], depth) == c; j++) {
            /* the items under nibble c */
        }
        if (j == i) {
            rlp_string(b, NULL, 0);
        } else {
            trie_ref(b, items + i, j - i, depth + 1);
        }
        i = j;
    }
    if (items[0].key_len * 2 == depth) {
        rlp_string(b, items[0].value, items[0].value_len);
    } else {
        rlp_string(b, NULL, 0);
    }
    rlp_list_close(b, mark);
}


int
provend_mpt_ordered_root(const provend_eth_node_t *values, size_t n,
    uint8_t root[32])
{
    size_t        i;
    uint8_t       index[8];
    rlp_buf_t     b;
    trie_item_t  *items;

    if (n == 0) {
        index[0] = 0x80;                /* the empty trie: keccak(rlp("")) */
        provend_keccak256(index, 1, root);
        return PROVEN_OK;
    }
    if (n > 0xffff) {
        return PROVEN_ERR;
    }
    items = calloc(n, sizeof(*items));
    if (items == NULL) {
        return PROVEN_ERR;
    }
    memset(&b, 0, sizeof(b));
    for (i = 0; i < n; i++) {
        /* the key: rlp(i), a number without leading zeros (0: empty) */
        b.len = 0;
        if (i == 0) {
            rlp_string(&b, NULL, 0);
        } else {
            index[0] = (uint8_t) (i >> 8);
            index[1] = (uint8_t) i;
            rlp_string(&b, i > 0xff ? index : index + 1, i > 0xff ? 2 : 1);
        }
        if (b.failed) {
            break;
        }
        memcpy(items[i].key, b.p, b.len);
        items[i].key_len = b.len;
        items[i].value = values[i].data;
        items[i].value_len = values[i].len;
    }
    qsort(items, n, sizeof(*items), trie_item_cmp);
    b.len = 0;
    if (!b.failed) {
        trie_node(&b, items, n, 0);
    }
    if (!b.failed) {
        provend_keccak256(b.p, b.len, root);
    }
    free(items);
    free(b.p);
    return b.failed ? PROVEN_ERR : PROVEN_OK;
}


/* ---- receipts ------------------------------------------------------------------ */

/* "0x" and hex digits of a JSON string into out (size at most): bytes,
 * or -1.  quantity: odd digits allowed, leading zero bytes dropped. */
static long
json_hex(const json_t *v, uint8_t *out, size_t size, int quantity)
{
    size_t       digits, n, lead;
    const char  *s;
    uint8_t      first;

    s = json_string_value(v);
    if (s == NULL || strncmp(s, "0x", 2) != 0) {
        return -1;
    }
    s += 2;
    digits = strlen(s);
    if (digits % 2 == 1) {
        if (!quantity || size == 0
            || proven_hex_decode((char[]) { '0', s[0] }, 2, &first, 1, &n)
               != PROVEN_OK)
        {
            return -1;
        }
        out[0] = first;
        if (proven_hex_decode(s + 1, digits - 1, out + 1, size - 1, &n)
            != PROVEN_OK)
        {
            return -1;
        }
        n++;
    } else if (proven_hex_decode(s, digits, out, size, &n) != PROVEN_OK) {
        return -1;
    }
    if (quantity) {
        for (lead = 0; lead < n && out[lead] == 0; lead++) {
            /* dropped */
        }
        memmove(out, out + lead, n - lead);
        n -= lead;
    }
    return (long) n;
}


void
provend_eth_logs_free(provend_eth_log_t *logs, size_t n)
{
    size_t  i;

    for (i = 0; logs != NULL && i < n; i++) {
        free(logs[i].data);
    }
    free(logs);
}


/* One receipt's log into b (and into the block's list). */
static int
receipt_log(rlp_buf_t *b, const json_t *log, provend_eth_log_t *out,
    char *err, size_t errlen)
{
    long     len;
    size_t   mark, tmark, i, ntopics, size;
    json_t  *topics, *data;

    memset(out, 0, sizeof(*out));
    topics = json_object_get(log, "topics");
    data = json_object_get(log, "data");
    ntopics = json_array_size(topics);
    if (json_hex(json_object_get(log, "address"), out->address, 20, 0) != 20
        || !json_is_array(topics) || ntopics > 4 || !json_is_string(data)
        || strlen(json_string_value(data)) > 2 + 2 * LOG_DATA_MAX)
    {
        proven_errf(err, errlen, "a log is not {address, topics (4 at "
                    "most), data (%d MiB at most)}",
                    LOG_DATA_MAX / 1024 / 1024);
        return PROVEN_ERR;
    }
    for (i = 0; i < ntopics; i++) {
        if (json_hex(json_array_get(topics, i), out->topics[i], 32, 0)
            != 32)
        {
            proven_errf(err, errlen, "a log's topic is not 32 bytes");
            return PROVEN_ERR;
        }
    }
    out->ntopics = ntopics;
    size = strlen(json_string_value(data)) / 2 + 1;
    out->data = malloc(size);
    len = out->data != NULL ? json_hex(data, out->data, size, 0) : -1;
    if (len < 0) {
        proven_errf(err, errlen, out->data == NULL ? "out of memory"
                    : "a log's data is not hex");
        return PROVEN_ERR;
    }
    out->data_len = (size_t) len;

    mark = b->len;
    rlp_string(b, out->address, 20);
    tmark = b->len;
    for (i = 0; i < ntopics; i++) {
        rlp_string(b, out->topics[i], 32);
    }
    rlp_list_close(b, tmark);
    rlp_string(b, out->data, out->data_len);
    rlp_list_close(b, mark);
    return PROVEN_OK;
}


int
provend_eth_receipts(const json_t *receipts, const uint8_t receipts_root[32],
    provend_eth_log_t **logs_out, size_t *nlogs_out, char *err,
    size_t errlen)
{
    int                  rc;
    long                 len;
    size_t               n, i, j, nlogs, mark, logs_mark, *ends;
    json_t              *r, *logs, *type;
    uint8_t              field[32], root[32], bloom[256], type_byte;
    rlp_buf_t            b;
    provend_eth_log_t   *all, *grown;
    provend_eth_node_t  *values;

    *logs_out = NULL;
    *nlogs_out = 0;
    n = json_array_size(receipts);
    if (!json_is_array(receipts) || n > RECEIPTS_MAX) {
        proven_errf(err, errlen, "receipts are not an array of %d at most",
                    RECEIPTS_MAX);
        return PROVEN_ERR;
    }

    rc = PROVEN_ERR;
    memset(&b, 0, sizeof(b));
    all = NULL;
    nlogs = 0;
    ends = calloc(n + 1, sizeof(*ends));
    values = calloc(n + 1, sizeof(*values));
    if (ends == NULL || values == NULL) {
        proven_errf(err, errlen, "out of memory");
        goto done;
    }

    /* every receipt, one after another in b: ends[i] is where i ends */
    for (i = 0; i < n; i++) {
        r = json_array_get(receipts, i);
        type = json_object_get(r, "type");
        len = type != NULL ? json_hex(type, field, 1, 1) : 0;
        if (len < 0 || (len == 1 && field[0] >= 0x80)) {
            proven_errf(err, errlen, "receipt %zu: a type that is not one "
                        "of EIP-2718's", i);
            goto done;
        }
        type_byte = len == 1 ? field[0] : 0;
        if (type_byte != 0) {
            rlp_raw(&b, &type_byte, 1);
        }
        mark = b.len;

        /* Byzantium's status, or the state root before it */
        if (json_object_get(r, "status") != NULL) {
            len = json_hex(json_object_get(r, "status"), field, 1, 1);
        } else {
            len = json_hex(json_object_get(r, "root"), field, 32, 0);
            len = len == 32 ? len : -1;
        }
        if (len < 0) {
            proven_errf(err, errlen, "receipt %zu: no status (0 or 1) nor "
                        "state root", i);
            goto done;
        }
        rlp_string(&b, field, (size_t) len);
        len = json_hex(json_object_get(r, "cumulativeGasUsed"), field, 32, 1);
        if (len < 0 || len > 8) {
            proven_errf(err, errlen, "receipt %zu: cumulativeGasUsed is "
                        "not a number of 64 bits", i);
            goto done;
        }
        rlp_string(&b, field, (size_t) len);
        if (json_hex(json_object_get(r, "logsBloom"), bloom, 256, 0) != 256)
        {
            proven_errf(err, errlen, "receipt %zu: logsBloom is not 256 "
                        "bytes", i);
            goto done;
        }
        rlp_string(&b, bloom, 256);

        logs = json_object_get(r, "logs");
        if (!json_is_array(logs)
            || json_array_size(logs) > LOGS_MAX - nlogs)
        {
            proven_errf(err, errlen, "receipt %zu: logs are not an array "
                        "(%d in a block at most)", i, LOGS_MAX);
            goto done;
        }
        if (json_array_size(logs) > 0) {
            grown = realloc(all, (nlogs + json_array_size(logs))
                                 * sizeof(*all));
            if (grown == NULL) {
                proven_errf(err, errlen, "out of memory");
                goto done;
            }
            all = grown;
        }
        logs_mark = b.len;
        for (j = 0; j < json_array_size(logs); j++) {
            if (receipt_log(&b, json_array_get(logs, j), &all[nlogs], err,
                            errlen) != PROVEN_OK)
            {
                nlogs++;                /* its data freed with the rest */
                goto done;
            }
            all[nlogs].log_index = (uint32_t) nlogs;
            all[nlogs].tx_index = (uint32_t) i;
            if (json_hex(json_object_get(r, "transactionHash"),
                         all[nlogs].tx_hash, 32, 0) != 32)
            {
                memset(all[nlogs].tx_hash, 0, 32);
            }
            nlogs++;
        }
        rlp_list_close(&b, logs_mark);
        rlp_list_close(&b, mark);
        if (b.failed) {
            proven_errf(err, errlen, "out of memory");
            goto done;
        }
        ends[i + 1] = b.len;
    }

    for (i = 0; i < n; i++) {
        values[i].data = b.p + ends[i];
        values[i].len = ends[i + 1] - ends[i];
    }
    if (provend_mpt_ordered_root(values, n, root) != PROVEN_OK) {
        proven_errf(err, errlen, "out of memory");
        goto done;
    }
    if (memcmp(root, receipts_root, 32) != 0) {
        proven_errf(err, errlen, "the receipts are not those of the block: "
                    "their trie's root is not its receipts root");
        goto done;
    }

    *logs_out = all;
    *nlogs_out = nlogs;
    all = NULL;
    rc = PROVEN_OK;

done:

    provend_eth_logs_free(all, nlogs);
    free(ends);
    free(values);
    free(b.p);
    return rc;
}
