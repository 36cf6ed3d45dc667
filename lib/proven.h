/*
 * libproven: C shared by nginx modules, provend and the `proven` command.
 * No nginx types here.  Every function that can fail returns PROVEN_OK or
 * PROVEN_ERR and, on failure, writes a one-line reason into a caller
 * supplied `char *err` buffer of `errlen` bytes (may be NULL).
 *
 * Memory: buffers returned through `uint8_t **out` are malloc()ed and owned
 * by the caller (free()).  cbor_item_t references follow libcbor rules.
 */

#ifndef PROVEN_H
#define PROVEN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <cbor.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#define PROVEN_OK     0
#define PROVEN_ERR    -1
#define PROVEN_AGAIN  -2    /* not yet: more input is needed */

#define PROVEN_ERR_LEN  256

/* Fills a caller's err buffer, which may be NULL (or an array). */
#define proven_errf(err, errlen, ...)                                      \
    do {                                                                   \
        char  *proven_err_ = (err);                                        \
        if (proven_err_ != NULL) {                                         \
            snprintf(proven_err_, errlen, __VA_ARGS__);                    \
        }                                                                  \
    } while (0)


/* ---- CBOR helpers (lib/proven_cbor.c) ------------------------------------ */

/* Nesting deeper than this is refused before libcbor builds anything. */
#define PROVEN_CBOR_MAX_DEPTH  16

/*
 * Decodes exactly one CBOR item spanning all of buf (trailing bytes are an
 * error).  Definite and indefinite lengths are both accepted.  Returns NULL
 * with err filled on malformed, truncated, too deep or trailing input.
 */
cbor_item_t *proven_cbor_load(const uint8_t *buf, size_t len, char *err,
    size_t errlen);

/* The same for the first item of buf, other bytes after it allowed: its
 * length into *used. */
cbor_item_t *proven_cbor_load_first(const uint8_t *buf, size_t len,
    size_t *used, char *err, size_t errlen);

/* Serializes item into a malloc()ed buffer. */
int proven_cbor_dump(const cbor_item_t *item, uint8_t **out, size_t *outlen);

/* Map lookups; NULL when absent or when map is not a map.  Borrowed. */
cbor_item_t *proven_cbor_map_get(const cbor_item_t *map, const char *key);
cbor_item_t *proven_cbor_map_get_int(const cbor_item_t *map, int64_t key);

/*
 * Copies a byte string (definite or indefinite) into a malloc()ed buffer of
 * at most `max` bytes; larger is an error.  A zero length string gives a
 * non-NULL buffer with *len = 0.
 */
int proven_cbor_bytes(const cbor_item_t *item, size_t max, uint8_t **out,
    size_t *len);

/* Same for a text string; the copy is NUL terminated. */
int proven_cbor_text(const cbor_item_t *item, size_t max, char **out,
    size_t *len);

/*
 * A definite text of fewer than size bytes, without a NUL, copied into
 * out and NUL terminated.  PROVEN_ERR (out untouched) for anything else.
 */
int proven_cbor_text_into(const cbor_item_t *item, char *out, size_t size);

/*
 * null and bool tests that are safe on any item: libcbor 0.8's
 * cbor_is_null() and cbor_is_bool() abort on floats.
 */
int proven_cbor_is_null(const cbor_item_t *item);
int proven_cbor_is_bool(const cbor_item_t *item);

/* Unsigned integer of any width. */
int proven_cbor_uint(const cbor_item_t *item, uint64_t *value);

/* map[key] as a definite byte string of exactly len bytes, copied to out. */
int proven_cbor_fixed(const cbor_item_t *map, const char *key, uint8_t *out,
    size_t len);

/* Adds key (text) -> value to map; takes over the caller's value reference. */
int proven_cbor_map_put(cbor_item_t *map, const char *key, cbor_item_t *value);


/* ---- CBOR in place, for hot paths (lib/proven_cbor_span.c) --------------- */

/*
 * A reader over a buffer that allocates nothing: items are read as heads
 * and spans of the buffer.  Only definite lengths; anything else (an
 * indefinite length, a reserved value, a float) is PROVEN_ERR, and the
 * caller takes the general libcbor path instead.
 */
typedef struct {
    const uint8_t  *p;
    const uint8_t  *end;
} proven_cbor_span_t;

#define PROVEN_CBOR_UINT   0
#define PROVEN_CBOR_NEGINT 1
#define PROVEN_CBOR_BYTES  2
#define PROVEN_CBOR_TEXT   3
#define PROVEN_CBOR_ARRAY  4
#define PROVEN_CBOR_MAP    5
#define PROVEN_CBOR_TAG    6
#define PROVEN_CBOR_SIMPLE 7

/* The next head: major type and argument (a length, a value). */
int proven_cbor_span_head(proven_cbor_span_t *r, int *major, uint64_t *arg);

/* A text or byte string of major type major: its bytes, in place. */
int proven_cbor_span_string(proven_cbor_span_t *r, int major,
    const uint8_t **s, size_t *len);

#define PROVEN_CBOR_INDEFINITE  UINT64_MAX

/*
 * A map head: *pairs, or PROVEN_CBOR_INDEFINITE for an indefinite map
 * (what proven_request_new() makes), whose end proven_cbor_span_break()
 * finds.
 */
int proven_cbor_span_map(proven_cbor_span_t *r, uint64_t *pairs);

/* Whether the next byte is a break (0xff), consumed if so. */
int proven_cbor_span_break(proven_cbor_span_t *r);

/* Skips one item (its contents too), at most depth levels deep. */
int proven_cbor_span_skip(proven_cbor_span_t *r, int depth);

/* Writes a head in its shortest form at p (at most 9 bytes); returns the end. */
uint8_t *proven_cbor_put_head(uint8_t *p, int major, uint64_t arg);

/* Writes a text or byte string (head and bytes); returns the end. */
uint8_t *proven_cbor_put_string(uint8_t *p, int major, const void *s,
    size_t len);


/* ---- frames (lib/proven_frame.c) ----------------------------------------- */

/*
 * One frame: 4-byte big-endian length N (1 <= N <= 16 MiB), then N bytes of
 * one CBOR map.  request {"id": uint, "op": text, ...arguments};
 * response {"id", "ok": true, "result"} or
 * {"id", "ok": false, "error": {"code": text, "message": text}}.
 */

#define PROVEN_FRAME_HEADER   4
#define PROVEN_FRAME_MAX      (16u * 1024 * 1024)
#define PROVEN_OP_MAX         64

/* Reads a header; PROVEN_ERR when N is 0 or larger than PROVEN_FRAME_MAX. */
int proven_frame_length(const uint8_t header[PROVEN_FRAME_HEADER],
    uint32_t *len, char *err, size_t errlen);

void proven_frame_put_length(uint8_t header[PROVEN_FRAME_HEADER],
    uint32_t len);

/* Serializes item with its 4-byte header in front. */
int proven_frame_encode(const cbor_item_t *item, uint8_t **out,
    size_t *outlen, char *err, size_t errlen);

/*
 * The frame reader: no I/O, like hiredis's reader.  Bytes go in as they
 * arrive (copied by _feed, or read straight into _space then counted by
 * _fill); _next pops whole frames.  The buffer grows with the bytes that
 * arrive, never with a length a peer declares, and never past one frame
 * of max_body bytes plus one read; it shrinks back once empty.  A length
 * out of bounds fails the reader for good (the stream has lost its
 * framing).
 */
#define PROVEN_FRAME_READ_CHUNK  (64 * 1024)

typedef struct {
    uint8_t  *buf;
    size_t    cap;
    size_t    start;          /* the first byte not popped */
    size_t    end;            /* one past the last byte in */
    size_t    max_body;
    int       failed;
} proven_frame_reader_t;

/* max_body: the largest frame body accepted (0: PROVEN_FRAME_MAX). */
void proven_frame_reader_init(proven_frame_reader_t *r, size_t max_body);
/* Frees the buffer; the reader is then as new, for another stream. */
void proven_frame_reader_free(proven_frame_reader_t *r);

/*
 * Where to read the next bytes, *avail of them (PROVEN_FRAME_READ_CHUNK
 * or less).  NULL when out of memory; *avail 0 when the buffer holds as
 * much as it may: pop frames first.  Moves the unpopped bytes, so a body
 * from _next is valid only until the next _space or _feed.
 */
uint8_t *proven_frame_reader_space(proven_frame_reader_t *r, size_t *avail);
void proven_frame_reader_fill(proven_frame_reader_t *r, size_t n);

/* Copies len bytes in; PROVEN_ERR when out of memory or over the bound. */
int proven_frame_reader_feed(proven_frame_reader_t *r, const uint8_t *data,
    size_t len, char *err, size_t errlen);

/*
 * The next whole frame's body, in place: PROVEN_OK, PROVEN_AGAIN when
 * its bytes have not all arrived, PROVEN_ERR when its length is out of
 * bounds (then every later call too).
 */
int proven_frame_reader_next(proven_frame_reader_t *r, const uint8_t **body,
    size_t *len, char *err, size_t errlen);

/* Bytes held that no frame popped yet. */
#define proven_frame_reader_pending(r)  ((r)->end - (r)->start)

/*
 * The frame builder: CBOR written straight into a growing buffer behind
 * the 4-byte header, for hot paths that skip libcbor's trees.  Errors
 * are sticky (out of memory, over max_body) and reported by _finish, so
 * a caller writes a whole frame and checks once.
 */
typedef struct {
    uint8_t  *buf;
    size_t    len;            /* header included */
    size_t    cap;
    size_t    max_body;
    int       failed;
} proven_frame_builder_t;

/* hint: the expected body size (grows past it); max_body 0: the maximum. */
void proven_frame_builder_init(proven_frame_builder_t *b, size_t hint,
    size_t max_body);
void proven_frame_builder_free(proven_frame_builder_t *b);

void proven_frame_put_head(proven_frame_builder_t *b, int major,
    uint64_t arg);
void proven_frame_put_uint(proven_frame_builder_t *b, uint64_t value);
void proven_frame_put_text(proven_frame_builder_t *b, const char *text);
void proven_frame_put_string(proven_frame_builder_t *b, int major,
    const void *s, size_t len);
void proven_frame_put_bool(proven_frame_builder_t *b, int value);
void proven_frame_put_null(proven_frame_builder_t *b);
/* Bytes that are already CBOR (whole items, or pairs of a map). */
void proven_frame_put_raw(proven_frame_builder_t *b, const void *cbor,
    size_t len);

/*
 * Writes the header and hands the frame over (*frame malloc()ed, *len
 * with its header); PROVEN_ERR, nothing handed, if any put failed.
 */
int proven_frame_builder_finish(proven_frame_builder_t *b, uint8_t **frame,
    size_t *len);

/* The head of an ok response: {"id": id, "ok": true, "result": ...} */
void proven_frame_put_ok(proven_frame_builder_t *b, uint64_t id);

typedef struct {
    uint64_t      id;
    int           has_id;             /* id was present and an uint */
    char          op[PROVEN_OP_MAX];  /* NUL terminated */
    cbor_item_t  *map;                /* the whole request map, owned */
} proven_request_t;

/*
 * Decodes a frame body (without header) as a request.  On error, has_id
 * says whether req->id may be used to address an error response.
 */
int proven_request_decode(const uint8_t *body, size_t len,
    proven_request_t *req, char *err, size_t errlen);
void proven_request_free(proven_request_t *req);

typedef struct {
    uint64_t      id;
    int           ok;
    cbor_item_t  *result;             /* borrowed from map; ok only */
    char          code[64];           /* !ok only, NUL terminated */
    char          message[256];       /* !ok only, truncated */
    cbor_item_t  *map;                /* owned */
} proven_response_t;

int proven_response_decode(const uint8_t *body, size_t len,
    proven_response_t *res, char *err, size_t errlen);
void proven_response_free(proven_response_t *res);

/* Whole frames (header included).  result may be NULL (encoded as null). */
int proven_response_encode_ok(uint64_t id, cbor_item_t *result,
    uint8_t **out, size_t *outlen);
int proven_response_encode_error(uint64_t id, const char *code,
    const char *message, uint8_t **out, size_t *outlen);

/* Starts a request map {"id": id, "op": op}; add arguments, then encode. */
cbor_item_t *proven_request_new(uint64_t id, const char *op);


/* ---- the state page (lib/proven_state.c) --------------------------------- */

/*
 * DATA/run/state, PROVEN_STATE_SIZE bytes that provend writes and nginx
 * workers map read-only: "PVSTATE1", a 32-bit sequence (odd while provend
 * writes), a 32-bit length, then that many bytes of CBOR
 *   {"apps": {name: {"sockets": [text, ...], "package": hex text,
 *                    "routes": [[method, path], ...]}}}
 * The words are in the host's byte order: both sides run on one machine.
 */
#define PROVEN_STATE_SIZE    (1024 * 1024)
#define PROVEN_STATE_HEADER  16
#define PROVEN_STATE_MAGIC   "PVSTATE1"

/* The writer: the magic once, then each new state whole (len >= 1). */
void proven_state_init(uint8_t *page);
int proven_state_publish(uint8_t *page, const uint8_t *data, size_t len);

/* A reader: whether a page is one; its sequence, to tell a change. */
int proven_state_valid(const uint8_t *page);
uint32_t proven_state_seq(const uint8_t *page);

/*
 * A consistent copy of the state (*out malloc()ed) and the sequence it
 * had.  PROVEN_AGAIN: the writer was always at work (keep the old copy);
 * PROVEN_ERR: nothing published yet, or out of memory.
 */
int proven_state_copy(const uint8_t *page, uint8_t **out, size_t *len,
    uint32_t *seq);


/* ---- error codes (lib/proven_status.c) ----------------------------------- */

/*
 * The HTTP status for an error code of provend or an app's worker
 * ("not_found": 404, "busy": 503, ...); otherwise for codes the table
 * does not name (a module's own choice: 500, or 502 for a worker).
 */
int proven_status_of(const char *code, int otherwise);


/* ---- Merkle trees of nonces (lib/proven_merkle.c) ----------------------- */

/*
 * Batched attestation (issue 21): one document whose nonce is the root of
 * a Merkle tree over many clients' nonces, each client given its inclusion
 * proof.  The tree is RFC 9162's (Certificate Transparency 2.0, §2.1):
 * SHA-256, a leaf SHA-256(0x00 || nonce), a node SHA-256(0x01 || left ||
 * right), n leaves split at the largest power of two below n, so that a
 * leaf is never taken for a node nor a proof of one tree size for
 * another's.  A proof is the siblings from the leaf up (its "audit
 * path"); checking it needs the leaf's index and the tree's size.
 */
#define PROVEN_MERKLE_LEAVES_MAX  65536
#define PROVEN_MERKLE_DEPTH_MAX   16      /* log2 of the above */

typedef struct {
    uint8_t  *nodes;                    /* every level's, 32 bytes each */
    size_t    leaves;
    size_t    levels;
    size_t    start[PROVEN_MERKLE_DEPTH_MAX + 2];   /* level i's first */
    size_t    count[PROVEN_MERKLE_DEPTH_MAX + 2];
} proven_merkle_t;

/* A nonce's leaf hash: PROVEN_ERR only when out of memory. */
int proven_merkle_leaf(const uint8_t *nonce, size_t len, uint8_t out[32]);

/* The tree of n leaf hashes (1 to PROVEN_MERKLE_LEAVES_MAX): PROVEN_ERR
 * when n is out of bounds or out of memory. */
int proven_merkle_build(proven_merkle_t *t, const uint8_t (*leaves)[32],
    size_t n);
void proven_merkle_root(const proven_merkle_t *t, uint8_t root[32]);
/* Leaf index's proof into path: its length (0 for a tree of one). */
size_t proven_merkle_path(const proven_merkle_t *t, size_t index,
    uint8_t path[PROVEN_MERKLE_DEPTH_MAX][32]);
void proven_merkle_free(proven_merkle_t *t);

/*
 * Whether path proves leaf at index in the tree of size leaves whose root
 * is root (RFC 9162 §2.1.3.2): PROVEN_OK, or PROVEN_ERR.  What it shows
 * is that the leaf is in that tree: the root does not fix the size (a
 * proof of one of a tree's first leaves holds for larger sizes too).
 * leaf must be proven_merkle_leaf() of the client's own nonce, never a
 * hash it was given: an inner node passed as a leaf proves its place.
 */
int proven_merkle_verify(const uint8_t leaf[32], size_t index, size_t size,
    const uint8_t (*path)[32], size_t depth, const uint8_t root[32]);


/* ---- COSE_Sign1 (lib/proven_cose.c) ------------------------------------- */

/* The protected header {1: -35} (ES384) as Nitro encodes it. */
extern const uint8_t proven_cose_es384_protected[4];

/*
 * Signs payload as COSE_Sign1 with ES384: untagged array
 * [protected, {}, payload, r||s (96 bytes)], Sig_structure
 * ["Signature1", protected, h'', payload].  key is a P-384 private key.
 */
int proven_cose_sign_es384(const uint8_t *payload, size_t len, EVP_PKEY *key,
    uint8_t **out, size_t *outlen, char *err, size_t errlen);

/* Verifies an ES384 r||s signature over the Sig_structure of the parts. */
int proven_cose_verify_es384(const uint8_t *protected_hdr, size_t plen,
    const uint8_t *payload, size_t len, const uint8_t *sig, size_t siglen,
    EVP_PKEY *key, char *err, size_t errlen);


/*
 * Session messages (protocol v2): untagged COSE_Sign1 [protected, {},
 * payload, signature] with protected the bstr of the canonical {1: -8,
 * "seq": n} (EdDSA; 1 <= n < 2^53) and an Ed25519 signature over
 * ["Signature1", protected, aad, payload].  aad, the external AAD: the
 * 16-byte session id in a request; the id and SHA-256 of the request's
 * exact bytes in its answer (proven_session_answer_aad).
 */
#define PROVEN_EDDSA_SIG                  64
#define PROVEN_COSE_SEQ_MAX               ((UINT64_C(1) << 53) - 1)
#define PROVEN_COSE_EDDSA_PROTECTED_MAX   16

/* Signs payload under seq; *out is malloc()ed. key: an Ed25519 key. */
int proven_cose_sign_eddsa(const uint8_t *payload, size_t len, uint64_t seq,
    const uint8_t *aad, size_t aadlen, EVP_PKEY *key, uint8_t **out,
    size_t *outlen, char *err, size_t errlen);

/*
 * Checks that msg is such a message, exactly (its protected header the
 * canonical bytes for its seq, nothing after it), signed by key over aad.
 * Then *seq, and *payload points into msg.
 */
int proven_cose_verify_eddsa(const uint8_t *msg, size_t len,
    const uint8_t *aad, size_t aadlen, EVP_PKEY *key, uint64_t *seq,
    const uint8_t **payload, size_t *payload_len, char *err, size_t errlen);

/*
 * The same in two steps, so that a caller can tell a malformed message
 * (parse fails) from one signed by another key (check fails).  m points
 * into msg.
 */
typedef struct {
    uint64_t        seq;
    const uint8_t  *protected_hdr;
    size_t          protected_len;
    const uint8_t  *payload;
    size_t          payload_len;
    const uint8_t  *signature;          /* PROVEN_EDDSA_SIG bytes */
} proven_cose_eddsa_t;

int proven_cose_parse_eddsa(const uint8_t *msg, size_t len,
    proven_cose_eddsa_t *m, char *err, size_t errlen);
int proven_cose_check_eddsa(const proven_cose_eddsa_t *m, const uint8_t *aad,
    size_t aadlen, EVP_PKEY *key, char *err, size_t errlen);

#define PROVEN_SESSION_ID_LEN          16
#define PROVEN_SESSION_MARK            "proven-session-v1"
#define PROVEN_SESSION_USER_DATA_LEN   (17 + 16 + 32)
#define PROVEN_SESSION_ANSWER_AAD_LEN  (16 + 32)
#define PROVEN_IDENTIFY_MARK           "proven-identify-v1"
#define PROVEN_IDENTIFY_MESSAGE_MAX    (18 + 1 + 255 + 1 + 255 + 16)

/* A session document's user_data: the mark, the id, SHA-256(client key). */
void proven_session_user_data(const uint8_t id[PROVEN_SESSION_ID_LEN],
    const uint8_t client_key[32], uint8_t out[PROVEN_SESSION_USER_DATA_LEN]);

/* An answer's external AAD: the id, SHA-256 of the request's bytes. */
void proven_session_answer_aad(const uint8_t id[PROVEN_SESSION_ID_LEN],
    const uint8_t *request, size_t len,
    uint8_t aad[PROVEN_SESSION_ANSWER_AAD_LEN]);

/*
 * What an identity key signs to Identify: the mark, u8 length, app name
 * ("" for a management session), u8 length, origin ("" for none), the
 * session id.  PROVEN_ERR when app or origin is over 255 bytes.
 */
int proven_identify_message(const char *app, const char *origin,
    const uint8_t id[PROVEN_SESSION_ID_LEN],
    uint8_t out[PROVEN_IDENTIFY_MESSAGE_MAX], size_t *len);


/* ---- attestation documents (lib/proven_attestation.c) -------------------- */

#define PROVEN_ATT_FIELD_MAX   1024   /* public_key, user_data, nonce */

/*
 * The user_data of a document whose public_key is the key of the TLS
 * certificate that served it (proven_attestation_bind_tls): nginx sets it
 * there and refuses it (and every user_data starting "proven-") from
 * callers everywhere else, so a document with it cannot bind a key the
 * caller chose.
 */
#define PROVEN_TLS_BINDING_MARK  "proven-tls-binding-v1"

/* The user_data of a node's cluster key exchange document (its X25519
 * key in public_key).  nginx refuses every user_data starting with
 * PROVEN_MARK_PREFIX from callers. */
#define PROVEN_CLUSTER_EXCHANGE_MARK  "proven-cluster-exchange-v1"
#define PROVEN_MARK_PREFIX       "proven-"

/* The module_id of every document of the dev provider: never an enclave. */
#define PROVEN_DEV_MODULE_PREFIX "proven-dev-"
#define PROVEN_ATT_PCRS_MAX    32
#define PROVEN_ATT_PCR_MAX     64     /* SHA384 = 48, SHA512 = 64 */
#define PROVEN_ATT_CABUNDLE_MAX 16
#define PROVEN_ATT_CERT_MAX    (16 * 1024)
#define PROVEN_ATT_MODULE_ID_MAX 255

typedef struct {
    uint8_t  *data;       /* NULL when absent or null */
    size_t    len;
    int       present;    /* present and not null (len may be 0) */
} proven_buf_t;

typedef struct {
    uint32_t  index;
    size_t    len;
    uint8_t   value[PROVEN_ATT_PCR_MAX];
} proven_pcr_t;

typedef struct {
    char          module_id[PROVEN_ATT_MODULE_ID_MAX + 1];
    char          digest[16];                 /* "SHA384" */
    uint64_t      timestamp;                  /* ms since the epoch */
    size_t        pcr_count;
    proven_pcr_t  pcrs[PROVEN_ATT_PCRS_MAX];  /* ordered by index */
    proven_buf_t  certificate;                /* leaf, DER */
    size_t        cabundle_count;
    proven_buf_t  cabundle[PROVEN_ATT_CABUNDLE_MAX];  /* root first, DER */
    proven_buf_t  public_key;
    proven_buf_t  user_data;
    proven_buf_t  nonce;

    /* the raw COSE parts, as received; filled by decode */
    proven_buf_t  protected_hdr;
    proven_buf_t  payload;
    proven_buf_t  signature;
} proven_attestation_doc_t;

/*
 * Decodes a COSE_Sign1 attestation document (optionally CBOR tag 18) and
 * its payload, checking types and every bound above.  No signature or
 * certificate check.  doc is zeroed first; free with _doc_free.
 */
int proven_attestation_decode(const uint8_t *buf, size_t len,
    proven_attestation_doc_t *doc, char *err, size_t errlen);
void proven_attestation_doc_free(proven_attestation_doc_t *doc);

/*
 * Encodes the payload map from doc's fields (module_id, digest, timestamp,
 * pcrs, certificate, cabundle, public_key, user_data, nonce: absent ones as
 * null) with definite lengths, the way Nitro does.
 */
int proven_attestation_encode_payload(const proven_attestation_doc_t *doc,
    uint8_t **out, size_t *outlen, char *err, size_t errlen);

typedef enum {
    PROVEN_VERIFY_OK = 0,
    PROVEN_VERIFY_MALFORMED,        /* not a well formed attestation doc */
    PROVEN_VERIFY_BAD_SIGNATURE,    /* COSE signature does not verify */
    PROVEN_VERIFY_BAD_CERTIFICATE,  /* a certificate is unusable or forged */
    PROVEN_VERIFY_UNTRUSTED_ROOT,   /* chain does not lead to the root */
    PROVEN_VERIFY_EXPIRED,          /* a certificate is not valid then */
    PROVEN_VERIFY_NONCE_MISMATCH,
    PROVEN_VERIFY_PCR_MISMATCH,
    PROVEN_VERIFY_INTERNAL,         /* out of memory, OpenSSL failure */
    PROVEN_VERIFY_TLS_UNBOUND       /* valid, but not for the TLS key the
                                       caller was served (its own check) */
} proven_verify_status_t;

/* A stable lowercase name: "ok", "malformed", "bad_signature", ... */
const char *proven_verify_status_name(proven_verify_status_t status);

typedef enum {
    PROVEN_AT_NOW = 0,
    PROVEN_AT_DOC,                  /* the document's own timestamp */
    PROVEN_AT_MS                    /* at_ms below */
} proven_verify_at_t;

typedef struct {
    X509                *root;      /* NULL: the built-in AWS Nitro root */
    proven_verify_at_t   at;
    uint64_t             at_ms;
    const uint8_t       *nonce;     /* NULL: nonce not checked */
    size_t               nonce_len;
    size_t               pcr_count; /* expected PCRs, compared for equality */
    proven_pcr_t         pcrs[PROVEN_ATT_PCRS_MAX];
} proven_verify_opts_t;

/*
 * Full verification: decode, leaf certificate chain (cabundle as
 * intermediates) to opts->root at the chosen time, COSE signature with the
 * leaf key, then nonce and PCRs.  If out is not NULL the decoded document
 * is left there (free it even on failure).  err gets the human reason.
 */
proven_verify_status_t proven_attestation_verify(const uint8_t *buf,
    size_t len, const proven_verify_opts_t *opts,
    proven_attestation_doc_t *out, char *err, size_t errlen);

/* The AWS Nitro Enclaves root (SHA-256 641A0321...BB5B); caller frees. */
X509 *proven_aws_nitro_root(void);

/*
 * A JSON view for people (malloc()ed, NUL terminated): module_id, digest,
 * timestamp, pcrs {"0": hex, ...}, certificate and cabundle in base64,
 * public_key/user_data/nonce base64 (or null).
 */
char *proven_attestation_to_json(const proven_attestation_doc_t *doc,
    int pretty);


/* ---- dev PKI (lib/proven_pki.c) ----------------------------------------- */

EVP_PKEY *proven_pki_new_key(char *err, size_t errlen);   /* P-384 */

/*
 * A certificate for key, signed by issuer_key (issuer NULL: self signed),
 * valid from not_before to not_after (seconds since the epoch).  CA
 * certificates get basicConstraints CA:TRUE and keyCertSign.
 */
X509 *proven_pki_new_cert(EVP_PKEY *key, const char *common_name,
    X509 *issuer, EVP_PKEY *issuer_key, int is_ca, int64_t not_before,
    int64_t not_after, char *err, size_t errlen);

int proven_pki_cert_der(X509 *cert, uint8_t **out, size_t *outlen);


/* ---- application audit log (lib/proven_audit.c) ------------------------- */

/*
 * Every deploy, rollback and owner change of an application is an entry
 * of its audit log, a hash chain: each entry carries the SHA-256 of the
 * one before ("prev", zeros for the first) and the Ed25519 signature of an
 * owner over the change and that prev, so a signed change applies to one
 * place in one chain only.  Entries are deterministic CBOR maps
 *
 *   {"app", "seq", "prev", "time", "owner"?, "action", "signer",
 *    "package"?, "signature"}
 *
 * (keys in that, their canonical order) and the signed message is
 *
 *   {"app", "prev", "owner"?, "action", "domain": "proven-app-audit-v1",
 *    "package"?}
 *
 * A change made over a session (RPC Deploy) carries "session", the
 * session id, and "origin", the session's ("" for none), after "package";
 * its signature is then the owner identity's Identify proof for that
 * management session (proven_identify_message("", origin, session))
 * rather than over the message: it proves the owner identified in that
 * session, and the node, whose code is attested, vouches that the change
 * came from it.
 *
 * The first entry of an application is a deploy; its signer becomes the
 * first owner.  provend and `proven app audit` replay a chain with the same
 * proven_audit_apply(), so what the node accepts is what a reader checks.
 */

#define PROVEN_AUDIT_KEY_LEN     32
#define PROVEN_AUDIT_SIG_LEN     64
#define PROVEN_AUDIT_HASH_LEN    32
#define PROVEN_AUDIT_APP_MAX     64
#define PROVEN_AUDIT_OWNERS_MAX  16
#define PROVEN_AUDIT_ENTRY_MAX   1024    /* encoded entry, bounded */
#define PROVEN_AUDIT_SESSION_LEN 16
#define PROVEN_AUDIT_ORIGIN_MAX  255

typedef enum {
    PROVEN_AUDIT_DEPLOY = 1,
    PROVEN_AUDIT_ROLLBACK,
    PROVEN_AUDIT_ADD_OWNER,
    PROVEN_AUDIT_REMOVE_OWNER
} proven_audit_action_t;

typedef struct {
    char                   app[PROVEN_AUDIT_APP_MAX + 1];
    uint64_t               seq;                 /* 1, 2, ... */
    uint8_t                prev[PROVEN_AUDIT_HASH_LEN];
    uint64_t               time;                /* unix seconds, the node's */
    proven_audit_action_t  action;
    uint8_t                package[PROVEN_AUDIT_HASH_LEN]; /* deploy, rollback */
    uint8_t                owner[PROVEN_AUDIT_KEY_LEN];    /* owner changes */
    uint8_t                signer[PROVEN_AUDIT_KEY_LEN];
    uint8_t                signature[PROVEN_AUDIT_SIG_LEN];
    int                    has_session;     /* made over a session: */
    uint8_t                session[PROVEN_AUDIT_SESSION_LEN];
    char                   origin[PROVEN_AUDIT_ORIGIN_MAX + 1];  /* its */
} proven_audit_entry_t;

/* An application's state after replaying its chain. */
typedef struct {
    char       app[PROVEN_AUDIT_APP_MAX + 1];
    uint64_t   seq;                                 /* entries applied */
    uint8_t    head[PROVEN_AUDIT_HASH_LEN];         /* hash of the last */
    uint8_t    owners[PROVEN_AUDIT_OWNERS_MAX][PROVEN_AUDIT_KEY_LEN];
    size_t     nowners;
    int        has_current;
    uint8_t    current[PROVEN_AUDIT_HASH_LEN];      /* package deployed */
    uint8_t  (*deployed)[PROVEN_AUDIT_HASH_LEN];    /* every one, malloc()ed */
    size_t     ndeployed;
} proven_app_state_t;

/* "deploy", "rollback", "add_owner", "remove_owner"; parse: 0 if unknown. */
const char *proven_audit_action_name(proven_audit_action_t action);
proven_audit_action_t proven_audit_action_parse(const char *name);

/* The bytes an owner signs for e (its action, app, prev, package/owner). */
int proven_audit_message(const proven_audit_entry_t *e, uint8_t *out,
    size_t cap, size_t *len);

/* Fills e->signer and e->signature with key (an Ed25519 private key). */
int proven_audit_sign(proven_audit_entry_t *e, EVP_PKEY *key, char *err,
    size_t errlen);

/* Whether e->signature is e->signer's over proven_audit_message(e). */
int proven_audit_verify(const proven_audit_entry_t *e, char *err,
    size_t errlen);

/* The entry's canonical encoding; hash: SHA-256 of it. */
int proven_audit_encode(const proven_audit_entry_t *e, uint8_t *out,
    size_t cap, size_t *len);
int proven_audit_decode(const uint8_t *buf, size_t len,
    proven_audit_entry_t *e, char *err, size_t errlen);
void proven_audit_hash(const uint8_t *entry, size_t len,
    uint8_t hash[PROVEN_AUDIT_HASH_LEN]);

/*
 * Checks e follows st (seq, prev, app name for the first entry, a valid
 * signature by a current owner, the action's rules) and applies it; hash
 * is the entry's.  On PROVEN_ERR st is unchanged.
 */
int proven_audit_apply(proven_app_state_t *st, const proven_audit_entry_t *e,
    const uint8_t hash[PROVEN_AUDIT_HASH_LEN], char *err, size_t errlen);

void proven_app_state_free(proven_app_state_t *st);


/* ---- WebSocket frames (lib/proven_ws.c) ---------------------------------- */

#define PROVEN_WS_CONT            0x0
#define PROVEN_WS_TEXT            0x1
#define PROVEN_WS_BINARY          0x2
#define PROVEN_WS_CLOSE           0x8
#define PROVEN_WS_PING            0x9
#define PROVEN_WS_PONG            0xa

#define PROVEN_WS_NORMAL          1000      /* close codes */
#define PROVEN_WS_GOING_AWAY      1001
#define PROVEN_WS_PROTOCOL_ERROR  1002
#define PROVEN_WS_UNSUPPORTED     1003
#define PROVEN_WS_POLICY          1008
#define PROVEN_WS_TOO_BIG         1009
#define PROVEN_WS_INTERNAL        1011

#define PROVEN_WS_CONTROL_MAX     125
#define PROVEN_WS_HEAD_MAX        14        /* with the mask */

/* The message a connection is reading: its fragments so far. */
typedef struct {
    int       open;                 /* a fragmented message goes on */
    size_t    len;                  /* its bytes so far */
    size_t    max;                  /* the largest message */
} proven_ws_message_t;

typedef struct {
    unsigned      fin;
    unsigned      opcode;
    size_t        head;             /* bytes before the payload */
    size_t        mask_at;          /* the masking key's 4 bytes */
    uint64_t      len;              /* the payload's */
    unsigned      close_code;       /* PROVEN_ERR: close with this */
    const char   *reason;           /* and say this */
} proven_ws_frame_t;

/*
 * A client frame's head at p (have bytes), checked against msg: masked,
 * no reserved bits, a known opcode, whole control frames of at most 125
 * bytes, binary data only, fragments in order, the message bounded.
 * PROVEN_AGAIN: more bytes needed for the head; PROVEN_OK: f describes
 * the frame (whole once have >= f->head + f->len); PROVEN_ERR: the
 * connection closes with f->close_code, saying f->reason.
 */
int proven_ws_parse_head(const uint8_t *p, size_t have,
    const proven_ws_message_t *msg, proven_ws_frame_t *f);

void proven_ws_unmask(uint8_t *payload, size_t len, const uint8_t mask[4]);

/* A server frame's head (FIN, unmasked) at p; its length (2, 4 or 10). */
size_t proven_ws_put_head(uint8_t *p, unsigned opcode, uint64_t len);


/* ---- multipart/form-data (lib/proven_multipart.c) ------------------------ */

#define PROVEN_MULTIPART_BOUNDARY_MAX  70

typedef struct {
    const char     *name;           /* asked for */
    const uint8_t  *data;           /* found: in the body */
    size_t          len;
    int             found;
} proven_multipart_field_t;

/*
 * Finds the fields named in fields[] in body, whose Content-Type value
 * (with its boundary parameter) is content_type.  NULL when the body is
 * well formed (each field found or not), else what is wrong with it.
 */
const char *proven_multipart_fields(const uint8_t *content_type,
    size_t ctlen, const uint8_t *body, size_t len,
    proven_multipart_field_t *fields, size_t nfields);


/* ---- encodings (lib/proven_codec.c) -------------------------------------- */

/* Lower or upper case hex, even length; PROVEN_ERR otherwise. */
int proven_hex_decode(const char *hex, size_t hexlen, uint8_t *out,
    size_t outmax, size_t *outlen);
void proven_hex_encode(const uint8_t *in, size_t len, char *out); /* 2n+1 */

/* base64url without padding (padding also accepted on decode). */
int proven_base64url_decode(const char *in, size_t inlen, uint8_t *out,
    size_t outmax, size_t *outlen);

/* A random version 4 UUID, and its text form (37 bytes with the NUL). */
#define PROVEN_UUID_LEN       16
#define PROVEN_UUID_TEXT_LEN  37

int proven_uuid_v4(uint8_t id[PROVEN_UUID_LEN]);
void proven_uuid_text(const uint8_t id[PROVEN_UUID_LEN],
    char out[PROVEN_UUID_TEXT_LEN]);

/* Big-endian integers, as every format of ours writes them. */
static inline void
proven_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t) (v >> 24);
    p[1] = (uint8_t) (v >> 16);
    p[2] = (uint8_t) (v >> 8);
    p[3] = (uint8_t) v;
}

static inline void
proven_put_be64(uint8_t *p, uint64_t v)
{
    proven_put_be32(p, (uint32_t) (v >> 32));
    proven_put_be32(p + 4, (uint32_t) v);
}

static inline uint32_t
proven_get_be32(const uint8_t *p)
{
    return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16
           | (uint32_t) p[2] << 8 | p[3];
}

static inline uint64_t
proven_get_be64(const uint8_t *p)
{
    return (uint64_t) proven_get_be32(p) << 32 | proven_get_be32(p + 4);
}

/* Fills err with "what: <OpenSSL's last error>" and clears its queue. */
void proven_openssl_error(char *err, size_t errlen, const char *what);

/*
 * Whole files (proven_file.c).  write: data to path.tmp (created with
 * mode, not through a link), synced, then renamed over path.  read: a
 * regular file of at most max bytes, malloc()ed with a NUL added.
 */
int proven_write_file(const char *path, const void *data, size_t len,
    mode_t mode, char *err, size_t errlen);
int proven_read_file(const char *path, size_t max, uint8_t **out,
    size_t *outlen, char *err, size_t errlen);

#endif /* PROVEN_H */
