/*
 * `proven keyd`: the key-release service, for an operator's trusted
 * machine.  It holds data keys (DIR/keys/ID.key) and releases one only to
 * a node whose fresh attestation shows the measurements DIR/policy.json
 * allows, or those of a release one of the policy's release keys signed.
 * The wire format and its cryptography are in daemon/core/keyd.h.
 *
 * A process per connection (at most 32 at once), each under a deadline of
 * its own: a peer that holds connections open delays nobody else.  The
 * challenge lives in its connection only (provend asks for it and for the
 * release on one connection), so nobody can evict another's, and a
 * release recorded on one connection is worth nothing on any other.
 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "cli.h"
#include "core/keyd.h"
#include "core/util.h"
#include "net/proven_net.h"


#define CLI_KEYD_TIMEOUT_MS    5000     /* per request */
#define CLI_KEYD_CONN_S        15       /* a whole connection */
#define CLI_KEYD_CONNS         32       /* at once */
#define CLI_KEYD_REQUESTS      4        /* on one connection */
#define CLI_KEYD_POLICY_MAX    (64 * 1024)
#define CLI_KEYD_RELEASE_KEYS  16


typedef struct {
    size_t         pcr_count;
    proven_pcr_t   pcrs[PROVEN_ATT_PCRS_MAX];
    size_t         release_key_count;
    uint8_t        release_keys[CLI_KEYD_RELEASE_KEYS][PROVEND_KEYD_PUB_LEN];
    uint64_t       min_release_version;
} cli_keyd_policy_t;

typedef struct {
    const char        *dir;
    X509              *root;                /* NULL: the AWS Nitro root */
    EVP_PKEY          *identity;
    uint8_t            nonce[PROVEND_KEYD_NONCE_LEN];   /* this connection's */
    int                have_nonce;
} cli_keyd_t;


static volatile sig_atomic_t  cli_keyd_stop;


void
cli_usage_keyd(FILE *out)
{
    fprintf(out,
        "usage: proven keyd serve --dir DIR --listen ADDR [--root PEM]\n"
        "       proven keyd identity --dir DIR\n"
        "       proven keyd release-key --key FILE\n"
        "       proven keyd sign-release --key FILE --version N\n"
        "                   (--pcrs-file FILE | --pcr N=HEX ...) --out FILE\n"
        "\n"
        "serve: releases DIR/keys/ID.key (made on first release) to a node\n"
        "whose attestation (chained to PEM, default the AWS Nitro root)\n"
        "carries the challenge its connection was given, and whose PCR0-2\n"
        "equal DIR/policy.json's or those of a signed release:\n"
        "  {\"pcrs\": {\"0\": HEX, ...}, \"release_keys\": [HEX, ...],\n"
        "   \"min_release_version\": N}\n"
        "The policy is read at each request.  ADDR: tcp:HOST:PORT,\n"
        "unix:PATH, vsock:CID:PORT.\n"
        "identity: keyd's Ed25519 public key (DIR/identity.key, made if\n"
        "absent), which nodes pin with provend --keyd-identity.\n"
        "release-key: a release key (FILE, made if absent): its public key.\n"
        "sign-release: vouches for another measurement (PCRs from a 144-byte\n"
        "PCR0-2 file or --pcr), for the policy's release keys.\n"
        "\n"
        "exit status: 0 done, 1 failed, 2 usage error\n");
}


static void
cli_keyd_on_signal(int sig)
{
    (void) sig;
    cli_keyd_stop = 1;
}


/* A hex field of exactly len bytes. */
static int
cli_keyd_hex(const char *hex, uint8_t *out, size_t max, size_t *len)
{
    return proven_hex_decode(hex, strlen(hex), out, max, len) == PROVEN_OK
           && *len > 0 ? PROVEN_OK : PROVEN_ERR;
}


static int
cli_keyd_policy_load(const cli_keyd_t *kd, cli_keyd_policy_t *p, char *err,
    size_t errlen)
{
    int           rc;
    char          path[4200], *end;
    size_t        i, len;
    json_t       *root, *pcrs, *keys, *v, *minv;
    uint8_t      *text;
    const char   *name;
    unsigned long index;
    json_error_t  jerr;

    memset(p, 0, sizeof(*p));
    snprintf(path, sizeof(path), "%s/policy.json", kd->dir);
    if (proven_read_file(path, CLI_KEYD_POLICY_MAX, &text, &len, err, errlen)
        != PROVEN_OK)
    {
        return PROVEN_ERR;
    }
    root = json_loadb((const char *) text, len, 0, &jerr);
    free(text);
    if (root == NULL) {
        proven_errf(err, errlen, "policy.json: %s (line %d)", jerr.text,
                    jerr.line);
        return PROVEN_ERR;
    }

    rc = PROVEN_ERR;
    pcrs = json_object_get(root, "pcrs");
    keys = json_object_get(root, "release_keys");
    minv = json_object_get(root, "min_release_version");
    if ((pcrs != NULL && !json_is_object(pcrs))
        || (keys != NULL && !json_is_array(keys))
        || (minv != NULL && (!json_is_integer(minv)
                             || json_integer_value(minv) < 0)))
    {
        proven_errf(err, errlen, "policy.json: \"pcrs\" is an object, "
                    "\"release_keys\" an array, \"min_release_version\" an "
                    "integer");
        goto done;
    }
    json_object_foreach(pcrs, name, v) {
        errno = 0;
        index = strtoul(name, &end, 10);
        if (p->pcr_count == PROVEN_ATT_PCRS_MAX || name[0] < '0'
            || name[0] > '9' || *end != '\0' || errno != 0
            || index >= PROVEN_ATT_PCRS_MAX || !json_is_string(v)
            || cli_keyd_hex(json_string_value(v),
                            p->pcrs[p->pcr_count].value, PROVEN_ATT_PCR_MAX,
                            &p->pcrs[p->pcr_count].len) != PROVEN_OK)
        {
            proven_errf(err, errlen, "policy.json: PCR \"%.16s\" is not index "
                        "(< %d): hex", name, PROVEN_ATT_PCRS_MAX);
            goto done;
        }
        p->pcrs[p->pcr_count++].index = (uint32_t) index;
    }
    json_array_foreach(keys, i, v) {
        if (i == CLI_KEYD_RELEASE_KEYS || !json_is_string(v)
            || cli_keyd_hex(json_string_value(v), p->release_keys[i],
                            PROVEND_KEYD_PUB_LEN, &len) != PROVEN_OK
            || len != PROVEND_KEYD_PUB_LEN)
        {
            proven_errf(err, errlen, "policy.json: release key %zu is not 64 "
                        "hex digits (at most %d keys)", i,
                        CLI_KEYD_RELEASE_KEYS);
            goto done;
        }
        p->release_key_count++;
    }
    if (p->pcr_count > 0
        && !provend_keyd_pcrs_cover_image(p->pcrs, p->pcr_count))
    {
        proven_errf(err, errlen, "policy.json: \"pcrs\" must name PCR0, "
                    "PCR1 and PCR2 (the whole image)");
        goto done;
    }
    if (p->pcr_count == 0 && p->release_key_count == 0) {
        proven_errf(err, errlen, "policy.json allows nothing: give \"pcrs\" "
                    "or \"release_keys\"");
        goto done;
    }
    p->min_release_version = minv != NULL
                             ? (uint64_t) json_integer_value(minv) : 0;
    rc = PROVEN_OK;

done:

    json_decref(root);
    return rc;
}


/* The challenge this connection was given: taken (single use). */
static int
cli_keyd_take_nonce(cli_keyd_t *kd, const proven_buf_t *nonce)
{
    int  ok;

    ok = kd->have_nonce && nonce->present
         && nonce->len == PROVEND_KEYD_NONCE_LEN
         && CRYPTO_memcmp(kd->nonce, nonce->data, PROVEND_KEYD_NONCE_LEN) == 0;
    kd->have_nonce = 0;
    return ok;
}


/*
 * DIR/keys/ID.key: read, or made once.  Connections run in processes of
 * their own: a new key is written whole to a file of this process and
 * linked into place, so of two made at once one wins and both read it.
 */
static int
cli_keyd_data_key(const cli_keyd_t *kd, const char *id,
    uint8_t key[PROVEND_KEY_LEN], int *made, char *err, size_t errlen)
{
    int       linked;
    char      dir[4200], path[4300], tmp[4400];
    size_t    len;
    uint8_t  *buf;

    *made = 0;
    snprintf(dir, sizeof(dir), "%s/keys", kd->dir);
    snprintf(path, sizeof(path), "%s/%s.key", dir, id);
    if (access(path, F_OK) != 0) {
        snprintf(tmp, sizeof(tmp), "%s.%ld", path, (long) getpid());
        if (errno != ENOENT
            || provend_mkdirs(dir, 0700, err, errlen) != PROVEN_OK
            || RAND_bytes(key, PROVEND_KEY_LEN) != 1
            || proven_write_file(tmp, key, PROVEND_KEY_LEN, 0600, err,
                                 errlen) != PROVEN_OK)
        {
            OPENSSL_cleanse(key, PROVEND_KEY_LEN);
            if (err[0] == '\0') {
                proven_errf(err, errlen, "keys/%s.key: %s", id,
                            strerror(errno));
            }
            return PROVEN_ERR;
        }
        linked = link(tmp, path) == 0;
        (void) unlink(tmp);
        if (linked) {
            *made = 1;
            return PROVEN_OK;
        }
        OPENSSL_cleanse(key, PROVEND_KEY_LEN);
    }
    if (proven_read_file(path, PROVEND_KEY_LEN + 1, &buf, &len, err, errlen)
        != PROVEN_OK)
    {
        return PROVEN_ERR;
    }
    if (len == PROVEND_KEY_LEN) {
        memcpy(key, buf, PROVEND_KEY_LEN);
    }
    OPENSSL_cleanse(buf, len);
    free(buf);
    if (len != PROVEND_KEY_LEN) {
        proven_errf(err, errlen, "keys/%s.key holds %zu bytes, not a key",
                    id, len);
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


/*
 * Whether doc may have the key: its PCRs are the policy's, or a release
 * signed by one of the policy's release keys vouches for them.  why says
 * which, or why not.
 */
static int
cli_keyd_allowed(const cli_keyd_policy_t *p, const proven_attestation_doc_t *doc,
    const uint8_t *release, size_t release_len, char *why, size_t whylen)
{
    size_t                  i;
    uint32_t                which;
    char                    rerr[PROVEN_ERR_LEN];
    provend_keyd_release_t  rel;

    which = 0;
    if (p->pcr_count > 0
        && provend_keyd_pcrs_match(doc, p->pcrs, p->pcr_count, &which))
    {
        snprintf(why, whylen, "the policy's PCRs");
        return 1;
    }
    if (release == NULL) {
        snprintf(why, whylen, "its PCR %u is not the policy's, and no "
                 "release came with it", which);
        return 0;
    }
    if (provend_keyd_release_open(release, release_len, &rel, rerr,
                                  sizeof(rerr)) != PROVEN_OK)
    {
        snprintf(why, whylen, "its release: %.200s", rerr);
        return 0;
    }
    for (i = 0; i < p->release_key_count; i++) {
        if (memcmp(p->release_keys[i], rel.signer, PROVEND_KEYD_PUB_LEN)
            == 0)
        {
            break;
        }
    }
    if (i == p->release_key_count) {
        snprintf(why, whylen, "its release is signed by a key the policy "
                 "does not list");
        return 0;
    }
    if (rel.version < p->min_release_version) {
        snprintf(why, whylen, "its release (version %" PRIu64 ") is older "
                 "than the policy allows (%" PRIu64 ")", rel.version,
                 p->min_release_version);
        return 0;
    }
    if (!provend_keyd_pcrs_match(doc, rel.pcrs, rel.pcr_count, &which)) {
        snprintf(why, whylen, "its PCR %u is not the one its release "
                 "vouches for", which);
        return 0;
    }
    snprintf(why, whylen, "release version %" PRIu64, rel.version);
    return 1;
}


/*
 * DIR/backups/ID: the id of the newest backup of key ID a node told keyd
 * of.  A new one is taken only from a node whose data follows it (parent
 * equal to it), or when there is none yet; told again of the same, keyd
 * changes nothing.  Connections run in processes of their own: the check
 * and the write under flock(DIR/backups/ID.lock), the record written to
 * a file of this process, renamed into place and made durable before
 * the answer (a crash must not bring back an older newest).
 */
#define CLI_KEYD_FORK  2

static int
cli_keyd_backup_record(const cli_keyd_t *kd, const char *id,
    const uint8_t backup[PROVEND_BACKUP_ID_LEN],
    const uint8_t parent[PROVEND_BACKUP_ID_LEN], char *err, size_t errlen)
{
    int       fd, lock, rc;
    char      dir[4200], path[4300], tmp[4400];
    size_t    len;
    uint8_t  *now;

    snprintf(dir, sizeof(dir), "%.4000s/backups", kd->dir);
    snprintf(path, sizeof(path), "%s/%s.lock", dir, id);
    if (provend_mkdirs(dir, 0700, err, errlen) != PROVEN_OK) {
        return PROVEN_ERR;
    }
    lock = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lock < 0 || flock(lock, LOCK_EX) != 0) {
        proven_errf(err, errlen, "backups/%.64s.lock: %s", id,
                    strerror(errno));
        if (lock >= 0) {
            close(lock);
        }
        return PROVEN_ERR;
    }
    rc = PROVEN_ERR;
    snprintf(path, sizeof(path), "%s/%s", dir, id);
    now = NULL;
    if (access(path, F_OK) == 0) {
        if (proven_read_file(path, PROVEND_BACKUP_ID_LEN + 1, &now, &len,
                             err, errlen) != PROVEN_OK)
        {
            goto done;
        }
        if (len == PROVEND_BACKUP_ID_LEN
            && memcmp(now, backup, PROVEND_BACKUP_ID_LEN) == 0)
        {
            rc = PROVEN_OK;             /* told again */
            goto done;
        }
        if (len != PROVEND_BACKUP_ID_LEN
            || memcmp(now, parent, PROVEND_BACKUP_ID_LEN) != 0)
        {
            proven_errf(err, errlen, "this node's data does not follow the "
                        "newest backup of key \"%.64s\": another node "
                        "restored from the same backup has made one since "
                        "(a fork), or the node's record was changed", id);
            rc = CLI_KEYD_FORK;
            goto done;
        }
    }
    snprintf(tmp, sizeof(tmp), "%s.%ld", path, (long) getpid());
    if (proven_write_file(tmp, backup, PROVEND_BACKUP_ID_LEN, 0600, err,
                          errlen) != PROVEN_OK)
    {
        goto done;
    }
    if (rename(tmp, path) != 0) {
        proven_errf(err, errlen, "backups/%.64s: %s", id, strerror(errno));
        (void) unlink(tmp);
        goto done;
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        proven_errf(err, errlen, "backups: %s", strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        goto done;
    }
    close(fd);
    rc = PROVEN_OK;

done:

    free(now);
    close(lock);                        /* and the lock with it */
    return rc;
}


/* Whether backup is the newest of key id (why not into why). */
static int
cli_keyd_backup_newest(const cli_keyd_t *kd, const char *id,
    const uint8_t backup[PROVEND_BACKUP_ID_LEN], char *why, size_t whylen)
{
    int       newest;
    char      path[4300], err[PROVEN_ERR_LEN];
    size_t    len;
    uint8_t  *buf;

    snprintf(path, sizeof(path), "%.4000s/backups/%s", kd->dir, id);
    if (access(path, F_OK) != 0) {
        snprintf(why, whylen, "no backup of key \"%s\" was made that keyd "
                 "knows of", id);
        return 0;
    }
    if (proven_read_file(path, PROVEND_BACKUP_ID_LEN + 1, &buf, &len, err,
                         sizeof(err)) != PROVEN_OK)
    {
        snprintf(why, whylen, "backups/%.64s: %.150s", id, err);
        return 0;
    }
    newest = len == PROVEND_BACKUP_ID_LEN
             && memcmp(buf, backup, PROVEND_BACKUP_ID_LEN) == 0;
    free(buf);
    if (!newest) {
        snprintf(why, whylen, "not the newest backup of key \"%s\": "
                 "restoring an older one would roll its data back", id);
    }
    return newest;
}


/* The answer to a release request, or an error (code, message). */
static cbor_item_t *
cli_keyd_release(cli_keyd_t *kd, const proven_request_t *req,
    const char **code, char *msg, size_t msglen)
{
    int                       made;
    char                      id[PROVEND_KEYD_ID_MAX + 1], why[256];
    char                      how[64];
    char                      pcr0[17];
    size_t                    doc_len, release_len, adlen, siglen;
    uint8_t                  *doc, *release, eph_pub[32], box[32];
    uint8_t                   key[PROVEND_KEY_LEN], sig[64];
    uint8_t                   sealed[PROVEND_KEYD_SEALED_LEN];
    uint8_t                   ad[PROVEND_KEYD_NONCE_LEN + PROVEND_KEYD_ID_MAX];
    uint8_t                   answer[PROVEND_KEYD_ANSWER_MAX];
    uint8_t                   backup[PROVEND_BACKUP_ID_LEN];
    uint8_t                   parent[PROVEND_BACKUP_ID_LEN];
    uint8_t                   user_data[PROVEND_KEYD_USER_DATA_MAX];
    size_t                    user_data_len;
    provend_keyd_for_t        purpose;
    int                       asked_made, asked_restore, rc;
    EVP_PKEY                 *eph;
    cbor_item_t              *item, *out;
    cli_keyd_policy_t         policy;
    proven_verify_opts_t      opts;
    proven_verify_status_t    vs;
    proven_attestation_doc_t  d;

    doc = release = NULL;
    eph = NULL;
    out = NULL;
    memset(&d, 0, sizeof(d));
    *code = "bad_request";

    /* a backup made, or one to restore: its id bound in the document */
    memset(backup, 0, sizeof(backup));
    asked_made = proven_cbor_map_get(req->map, "backup_made") != NULL;
    asked_restore = proven_cbor_map_get(req->map, "backup_restore") != NULL;
    purpose = asked_made ? PROVEND_KEYD_FOR_BACKUP_MADE
              : asked_restore ? PROVEND_KEYD_FOR_BACKUP_RESTORE
              : PROVEND_KEYD_FOR_KEY;
    memset(parent, 0, sizeof(parent));
    if ((asked_made && asked_restore)
        || (purpose != PROVEND_KEYD_FOR_KEY
            && proven_cbor_fixed(req->map, asked_made ? "backup_made"
                                                      : "backup_restore",
                                 backup, sizeof(backup)) != PROVEN_OK)
        || (asked_made
            && proven_cbor_fixed(req->map, "backup_parent", parent,
                                 sizeof(parent)) != PROVEN_OK))
    {
        snprintf(msg, msglen, "backup_made with backup_parent, or "
                 "backup_restore: backups' ids, %d bytes",
                 PROVEND_BACKUP_ID_LEN);
        goto done;
    }
    user_data_len = provend_keyd_user_data(purpose, backup, parent,
                                           user_data);

    item = proven_cbor_map_get(req->map, "release");
    if (proven_cbor_text_into(proven_cbor_map_get(req->map, "key_id"), id,
                              sizeof(id)) != PROVEN_OK
        || !provend_keyd_id_valid(id)
        || proven_cbor_bytes(proven_cbor_map_get(req->map, "document"),
                             PROVEND_KEYD_DOC_MAX, &doc, &doc_len)
           != PROVEN_OK
        || (item != NULL && proven_cbor_bytes(item, PROVEND_KEYD_RELEASE_MAX,
                                              &release, &release_len)
                            != PROVEN_OK))
    {
        snprintf(msg, msglen, "release takes key_id ([a-z0-9_-], 1..%d), "
                 "document (bytes, at most %d) and optionally release "
                 "(bytes, at most %d)", PROVEND_KEYD_ID_MAX,
                 PROVEND_KEYD_DOC_MAX, PROVEND_KEYD_RELEASE_MAX);
        goto done;
    }

    /* the cheap checks first: a flood of documents costs no signature
       checks, and the challenge is taken whatever follows (one try) */
    *code = "refused";
    if (proven_attestation_decode(doc, doc_len, &d, why, sizeof(why))
        != PROVEN_OK)
    {
        snprintf(msg, msglen, "the document does not verify (malformed): %s",
                 why);
        goto done;
    }
    if (!cli_keyd_take_nonce(kd, &d.nonce)) {
        snprintf(msg, msglen, "the document's nonce is not the challenge "
                 "this connection was given");
        goto done;
    }
    if (!d.user_data.present
        || d.user_data.len != user_data_len
        || memcmp(d.user_data.data, user_data, user_data_len) != 0
        || !d.public_key.present || d.public_key.len != 32)
    {
        snprintf(msg, msglen, "the document is not this keyd request "
                 "(user_data \"%s\", then what it asks for and the backup's "
                 "id, and a 32-byte X25519 public_key)", PROVEN_KEYD_MARK);
        goto done;
    }
    proven_attestation_doc_free(&d);
    memset(&opts, 0, sizeof(opts));
    opts.root = kd->root;
    opts.at = PROVEN_AT_NOW;
    vs = proven_attestation_verify(doc, doc_len, &opts, &d, why, sizeof(why));
    if (vs != PROVEN_VERIFY_OK) {
        snprintf(msg, msglen, "the document does not verify (%s): %s",
                 proven_verify_status_name(vs), why);
        goto done;
    }
    if (cli_keyd_policy_load(kd, &policy, why, sizeof(why)) != PROVEN_OK) {
        *code = "internal";
        snprintf(msg, msglen, "policy: %s", why);
        goto done;
    }
    if (!cli_keyd_allowed(&policy, &d, release, release_len, why,
                          sizeof(why)))
    {
        snprintf(msg, msglen, "%s", why);
        goto done;
    }
    snprintf(how, sizeof(how), "%.60s", why);
    if (purpose == PROVEND_KEYD_FOR_BACKUP_RESTORE
        && !cli_keyd_backup_newest(kd, id, backup, why, sizeof(why)))
    {
        *code = "not_newest";
        snprintf(msg, msglen, "%s", why);
        fprintf(stderr, "keyd: refused a restore: %s\n", why);
        goto done;
    }

    *code = "internal";
    if (purpose == PROVEND_KEYD_FOR_BACKUP_MADE) {
        rc = cli_keyd_backup_record(kd, id, backup, parent, why,
                                    sizeof(why));
        if (rc != PROVEN_OK) {
            *code = rc == CLI_KEYD_FORK ? "not_newest" : "internal";
            snprintf(msg, msglen, "%s", why);
            if (rc == CLI_KEYD_FORK) {
                fprintf(stderr, "keyd: refused a backup: %s\n", why);
            }
            goto done;
        }
    }
    why[0] = '\0';
    if (cli_keyd_data_key(kd, id, key, &made, why, sizeof(why)) != PROVEN_OK)
    {
        snprintf(msg, msglen, "key \"%s\": %s", id, why);
        goto done;
    }
    siglen = sizeof(eph_pub);
    eph = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
    adlen = provend_keyd_sealed_ad(d.nonce.data, id, ad);
    if (eph == NULL
        || EVP_PKEY_get_raw_public_key(eph, eph_pub, &siglen) != 1
        || provend_keyd_box_key(eph, d.public_key.data, d.public_key.data,
                                eph_pub, box) != PROVEN_OK
        || provend_seal(box, ad, adlen, key, sizeof(key), sealed)
           != PROVEN_OK
        || provend_keyd_sign(kd->identity, answer,
                             provend_keyd_answer_message(d.nonce.data, id,
                                 d.public_key.data, eph_pub, sealed, answer),
                             sig) != PROVEN_OK
        || (out = cbor_new_definite_map(3)) == NULL
        || proven_cbor_map_put(out, "ephemeral",
                               cbor_build_bytestring(eph_pub, 32)) != PROVEN_OK
        || proven_cbor_map_put(out, "sealed",
                               cbor_build_bytestring(sealed, sizeof(sealed)))
           != PROVEN_OK
        || proven_cbor_map_put(out, "signature",
                               cbor_build_bytestring(sig, 64)) != PROVEN_OK)
    {
        if (out != NULL) {
            cbor_decref(&out);
        }
        snprintf(msg, msglen, "cannot seal the key (OpenSSL)");
        goto done;
    }

    pcr0[0] = '\0';
    if (d.pcr_count > 0) {
        proven_hex_encode(d.pcrs[0].value, 8, pcr0);
    }
    fprintf(stderr, "keyd: released key \"%s\"%s to %s (PCR%u %s...): %s%s"
            "\n", id, made ? " (made now)" : "", d.module_id,
            d.pcrs[0].index, pcr0, how,
            purpose == PROVEND_KEYD_FOR_BACKUP_MADE
            ? "; its backup is now the newest"
            : purpose == PROVEND_KEYD_FOR_BACKUP_RESTORE
              ? ", to restore the newest backup" : "");

done:

    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(box, sizeof(box));
    EVP_PKEY_free(eph);
    proven_attestation_doc_free(&d);
    free(doc);
    free(release);
    return out;
}


/* One request's answer frame (ok or error). */
static int
cli_keyd_answer(cli_keyd_t *kd, const uint8_t *body, size_t len,
    uint8_t **frame, size_t *frame_len)
{
    int                rc;
    char               msg[512], err[PROVEN_ERR_LEN];
    const char        *code;
    cbor_item_t       *result;
    proven_request_t   req;

    if (proven_request_decode(body, len, &req, err, sizeof(err))
        != PROVEN_OK)
    {
        rc = proven_response_encode_error(req.has_id ? req.id : 0,
                                          "bad_request", err, frame,
                                          frame_len);
        proven_request_free(&req);
        return rc;
    }

    result = NULL;
    code = "bad_request";
    snprintf(msg, sizeof(msg), "unknown op \"%s\": challenge, release",
             req.op);
    if (strcmp(req.op, "challenge") == 0) {
        if (RAND_bytes(kd->nonce, PROVEND_KEYD_NONCE_LEN) == 1
            && (result = cbor_new_definite_map(1)) != NULL
            && proven_cbor_map_put(result, "nonce",
                   cbor_build_bytestring(kd->nonce, PROVEND_KEYD_NONCE_LEN))
               != PROVEN_OK)
        {
            cbor_decref(&result);
        }
        kd->have_nonce = result != NULL;
        code = "internal";
        snprintf(msg, sizeof(msg), "no nonce (out of memory)");

    } else if (strcmp(req.op, "release") == 0) {
        result = cli_keyd_release(kd, &req, &code, msg, sizeof(msg));
        if (result == NULL) {
            fprintf(stderr, "keyd: refused a release: %s: %s\n", code, msg);
        }
    }

    if (result != NULL) {
        rc = proven_response_encode_ok(req.id, result, frame, frame_len);
        cbor_decref(&result);
    } else {
        rc = proven_response_encode_error(req.id, code, msg, frame,
                                          frame_len);
    }
    proven_request_free(&req);
    return rc;
}


static void
cli_keyd_conn(void *arg, int fd, size_t listener)
{
    cli_keyd_t     *kd = arg;
    int             n;
    char            err[PROVEN_ERR_LEN];
    size_t          len, frame_len;
    uint8_t        *frame;
    proven_conn_t   c;
    const uint8_t  *body;

    (void) listener;

    proven_conn_init(&c, fd, PROVEND_KEYD_FRAME_MAX);
    for (n = 0; n < CLI_KEYD_REQUESTS && !cli_keyd_stop; n++) {
        proven_conn_deadline(&c, CLI_KEYD_TIMEOUT_MS);
        if (proven_conn_recv(&c, &body, &len, err, sizeof(err))
            != PROVEN_OK)
        {
            break;
        }
        if (cli_keyd_answer(kd, body, len, &frame, &frame_len) != PROVEN_OK)
        {
            break;
        }
        n = proven_conn_send(&c, frame, frame_len, err, sizeof(err))
            == PROVEN_OK ? n : CLI_KEYD_REQUESTS;
        free(frame);
    }
    proven_conn_close(&c);
}


/* keyd's directory holds keys: nobody else's to read, whatever it was. */
static int
cli_keyd_private_dir(const char *dir, char *err, size_t errlen)
{
    if (chmod(dir, 0700) != 0) {
        proven_errf(err, errlen, "chmod %.200s: %s", dir, strerror(errno));
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


static int
cli_keyd_serve(const char *dir, const char *listen_text, const char *root)
{
    int                 fd, rc;
    char                err[PROVEN_ERR_LEN], path[4200], hex[65];
    FILE               *f;
    uint8_t             pub[32];
    cli_keyd_t          kd;
    proven_addr_t       addr;
    proven_serve_t      srv;
    struct sigaction    sa;
    cli_keyd_policy_t   policy;

    memset(&kd, 0, sizeof(kd));
    kd.dir = dir;
    rc = CLI_EXIT_FAILED;
    fd = -1;
    err[0] = '\0';

    if (root != NULL) {
        f = fopen(root, "r");
        kd.root = f != NULL ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
        if (f != NULL) {
            fclose(f);
        }
        if (kd.root == NULL) {
            fprintf(stderr, "proven keyd: --root %s: not a PEM certificate\n",
                    root);
            return CLI_EXIT_FAILED;
        }
    }
    snprintf(path, sizeof(path), "%s/identity.key", dir);
    if (provend_mkdirs(dir, 0700, err, sizeof(err)) != PROVEN_OK
        || cli_keyd_private_dir(dir, err, sizeof(err)) != PROVEN_OK
        || (kd.identity = provend_keyd_load_ed25519(path, 1, err,
                                                    sizeof(err))) == NULL
        || provend_keyd_public(kd.identity, pub) != PROVEN_OK
        || cli_keyd_policy_load(&kd, &policy, err, sizeof(err)) != PROVEN_OK
        || proven_addr_parse(listen_text, &addr, err, sizeof(err))
           != PROVEN_OK
        || (fd = proven_addr_listen(&addr, 16, err, sizeof(err))) < 0)
    {
        fprintf(stderr, "proven keyd: %s\n", err);
        goto done;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = cli_keyd_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    proven_hex_encode(pub, sizeof(pub), hex);
    fprintf(stderr, "keyd: identity %s, listening on %s\n", hex, addr.text);
    memset(&srv, 0, sizeof(srv));
    srv.max = CLI_KEYD_CONNS;           /* beyond: closed, the peer asks
                                           again */
    srv.lifetime_s = CLI_KEYD_CONN_S;
    srv.wait_children = 1;
    srv.stop = &cli_keyd_stop;
    srv.handle = cli_keyd_conn;
    srv.arg = &kd;
    proven_serve_forked(fd, &srv);
    rc = CLI_EXIT_OK;

done:

    if (fd >= 0) {
        close(fd);
    }
    EVP_PKEY_free(kd.identity);
    X509_free(kd.root);
    return rc;
}


/* Prints key's public half in hex. */
static int
cli_keyd_print_public(const char *path)
{
    char       err[PROVEN_ERR_LEN], hex[65];
    uint8_t    pub[32];
    EVP_PKEY  *key;

    err[0] = '\0';
    key = provend_keyd_load_ed25519(path, 1, err, sizeof(err));
    if (key == NULL || provend_keyd_public(key, pub) != PROVEN_OK) {
        fprintf(stderr, "proven keyd: %s\n", err[0] ? err : "no key");
        EVP_PKEY_free(key);
        return CLI_EXIT_FAILED;
    }
    EVP_PKEY_free(key);
    proven_hex_encode(pub, sizeof(pub), hex);
    printf("%s\n", hex);
    return CLI_EXIT_OK;
}


/* --pcr N=HEX into pcrs. */
static int
cli_keyd_pcr_option(const char *arg, proven_pcr_t *pcrs, size_t *count)
{
    char           *end;
    unsigned long   index;

    errno = 0;
    index = strtoul(arg, &end, 10);
    if (*count == PROVEN_ATT_PCRS_MAX || arg[0] < '0' || arg[0] > '9'
        || errno != 0 || *end != '=' || index >= PROVEN_ATT_PCRS_MAX
        || cli_keyd_hex(end + 1, pcrs[*count].value, PROVEN_ATT_PCR_MAX,
                        &pcrs[*count].len) != PROVEN_OK)
    {
        return PROVEN_ERR;
    }
    pcrs[(*count)++].index = (uint32_t) index;
    return PROVEN_OK;
}


static int
cli_keyd_sign_release(const char *key_path, uint64_t version,
    const char *pcrs_file, proven_pcr_t *pcrs, size_t count,
    const char *out_path)
{
    int        rc;
    char       err[PROVEN_ERR_LEN];
    size_t     i, len;
    uint8_t   *file, *release;
    EVP_PKEY  *key;

    err[0] = '\0';
    release = NULL;
    if (pcrs_file != NULL) {
        if (proven_read_file(pcrs_file, 3 * 48 + 1, &file, &len, err,
                             sizeof(err)) != PROVEN_OK)
        {
            fprintf(stderr, "proven keyd: %s\n", err);
            return CLI_EXIT_FAILED;
        }
        if (len != 3 * 48) {
            free(file);
            fprintf(stderr, "proven keyd: %s: %zu bytes, not PCR0-2 (144)\n",
                    pcrs_file, len);
            return CLI_EXIT_FAILED;
        }
        for (i = 0; i < 3; i++) {
            pcrs[i].index = (uint32_t) i;
            pcrs[i].len = 48;
            memcpy(pcrs[i].value, file + 48 * i, 48);
        }
        count = 3;
        free(file);
    }

    key = provend_keyd_load_ed25519(key_path, 0, err, sizeof(err));
    rc = key != NULL
         && provend_keyd_release_make(key, version, pcrs, count, &release,
                                      &len, err, sizeof(err)) == PROVEN_OK
         && proven_write_file(out_path, release, len, 0644, err, sizeof(err))
            == PROVEN_OK ? CLI_EXIT_OK : CLI_EXIT_FAILED;
    if (key != NULL && release != NULL) {
        free(release);
    }
    EVP_PKEY_free(key);
    if (rc != CLI_EXIT_OK) {
        fprintf(stderr, "proven keyd: %s\n", err);
    }
    return rc;
}


int
cli_keyd(int argc, char **argv)
{
    int            opt;
    size_t         count;
    uint64_t       version;
    const char    *action, *dir, *listen_text, *root, *key, *pcrs_file, *out;
    proven_pcr_t   pcrs[PROVEN_ATT_PCRS_MAX];

    static const struct option  options[] = {
        { "dir",       required_argument, NULL, 'd' },
        { "listen",    required_argument, NULL, 'l' },
        { "root",      required_argument, NULL, 'r' },
        { "key",       required_argument, NULL, 'k' },
        { "version",   required_argument, NULL, 'v' },
        { "pcrs-file", required_argument, NULL, 'f' },
        { "pcr",       required_argument, NULL, 'p' },
        { "out",       required_argument, NULL, 'o' },
        { "help",      no_argument,       NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };

    if (argc < 2 || argv[1][0] == '-') {
        cli_usage_keyd(argc == 2 && strcmp(argv[1], "--help") == 0
                       ? stdout : stderr);
        return argc == 2 && strcmp(argv[1], "--help") == 0 ? CLI_EXIT_OK
                                                           : CLI_EXIT_USAGE;
    }
    action = argv[1];
    dir = listen_text = root = key = pcrs_file = out = NULL;
    version = 0;
    count = 0;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (opt) {
        case 'd': dir = optarg; break;
        case 'l': listen_text = optarg; break;
        case 'r': root = optarg; break;
        case 'k': key = optarg; break;
        case 'f': pcrs_file = optarg; break;
        case 'o': out = optarg; break;
        case 'v':
            if (cli_parse_uint("keyd", "--version", optarg, UINT32_MAX,
                               &version)
                != PROVEN_OK)
            {
                return CLI_EXIT_USAGE;
            }
            break;
        case 'p':
            if (cli_keyd_pcr_option(optarg, pcrs, &count) != PROVEN_OK) {
                fprintf(stderr, "proven keyd: --pcr %s: N=HEX, N < %d, "
                        "at most %d bytes\n", optarg, PROVEN_ATT_PCRS_MAX,
                        PROVEN_ATT_PCR_MAX);
                return CLI_EXIT_USAGE;
            }
            break;
        case 'h':
            cli_usage_keyd(stdout);
            return CLI_EXIT_OK;
        default:
            cli_option_error("keyd", opt, argv);
            return CLI_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        cli_usage_keyd(stderr);
        return CLI_EXIT_USAGE;
    }

    if (strcmp(action, "serve") == 0 && dir != NULL && listen_text != NULL) {
        return cli_keyd_serve(dir, listen_text, root);
    }
    if (strcmp(action, "identity") == 0 && dir != NULL) {
        char  err[PROVEN_ERR_LEN], path[4200];

        snprintf(path, sizeof(path), "%s/identity.key", dir);
        if (provend_mkdirs(dir, 0700, err, sizeof(err)) != PROVEN_OK) {
            fprintf(stderr, "proven keyd: %s\n", err);
            return CLI_EXIT_FAILED;
        }
        return cli_keyd_print_public(path);
    }
    if (strcmp(action, "release-key") == 0 && key != NULL) {
        return cli_keyd_print_public(key);
    }
    if (strcmp(action, "sign-release") == 0 && key != NULL && out != NULL
        && (pcrs_file != NULL) != (count > 0))
    {
        return cli_keyd_sign_release(key, version, pcrs_file, pcrs, count,
                                     out);
    }
    cli_usage_keyd(stderr);
    return CLI_EXIT_USAGE;
}
