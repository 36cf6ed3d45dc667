/* The host's additions: egress destinations and cluster peers.  See peers.h. */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "peers.h"
#include "net/proven_net.h"


#define PEERS_MAX           16          /* provend's PROVEND_CLUSTER_PEERS_MAX */
#define PEERS_NAME_MAX      63
#define PEERS_URL_MAX       511
#define PEERS_PROVEND_MS    3000
#define PEERS_FILE_MAX      (256 * 1024)
#define PEERS_ADDITIONS_MAX 256         /* egress's list holds the image's
                                           too (PROVEN_ALLOW_MAX in all) */


typedef struct {
    char                  name[PEERS_NAME_MAX + 1];
    char                  url[PEERS_URL_MAX + 1];
    proven_egress_dest_t  at;           /* the attestation's host:port */
    proven_egress_dest_t  route;        /* its NATS routes' */
} peers_peer_t;


/* A node's name: letters, digits, . _ - (it goes into NATS' config). */
static int
peers_word(const char *s)
{
    size_t  len;

    len = strlen(s);
    return len > 0 && len <= PEERS_NAME_MAX
           && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                        "0123456789._-") == len;
}


/* https://HOST[:PORT]/PATH: printable, no quotes; its host:port in at. */
static int
peers_url(const char *url, proven_egress_dest_t *at)
{
    char         authority[PROVEN_EGRESS_NAME_MAX + 16];
    const char  *host, *end, *p;
    size_t       len;

    if (strncmp(url, "https://", 8) != 0) {
        return PROVEN_ERR;
    }
    /* no query or fragment: provend adds "?nonce=" */
    for (p = url; *p != '\0'; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == '"' || *p == '\\' || *p == '?'
            || *p == '#')
        {
            return PROVEN_ERR;
        }
    }
    host = url + 8;
    end = strchr(host, '/');
    len = end != NULL ? (size_t) (end - host) : strlen(host);
    if (len == 0 || len + 5 > sizeof(authority)) {
        return PROVEN_ERR;
    }
    memcpy(authority, host, len);
    authority[len] = '\0';
    /* no port: https's */
    p = authority[0] == '[' ? strstr(authority, "]:") : strchr(authority, ':');
    if (p == NULL) {
        strcat(authority, ":443");
    }
    return proven_egress_parse_dest(authority, strlen(authority), 0, at);
}


/* One peer of initialize's or add_peer's: {name, attestation, route}. */
static int
peers_parse(const cbor_item_t *item, peers_peer_t *peer, const char *where,
    char *err, size_t errlen)
{
    char  route[PROVEN_EGRESS_NAME_MAX + 16];

    if (item == NULL || !cbor_isa_map(item)
        || proven_cbor_text_into(proven_cbor_map_get(item, "name"),
                                 peer->name, sizeof(peer->name)) != PROVEN_OK
        || proven_cbor_text_into(proven_cbor_map_get(item, "attestation"),
                                 peer->url, sizeof(peer->url)) != PROVEN_OK
        || proven_cbor_text_into(proven_cbor_map_get(item, "route"), route,
                                 sizeof(route)) != PROVEN_OK)
    {
        proven_errf(err, errlen, "%s: {\"name\", \"attestation\", \"route\"}, "
                    "texts", where);
        return PROVEN_ERR;
    }
    if (!peers_word(peer->name)) {
        proven_errf(err, errlen, "%s: name: 1 to %d of A-Z a-z 0-9 . _ -",
                    where, PEERS_NAME_MAX);
        return PROVEN_ERR;
    }
    if (peers_url(peer->url, &peer->at) != PROVEN_OK) {
        proven_errf(err, errlen, "%s: attestation: an https://HOST[:PORT]/PATH "
                    "URL", where);
        return PROVEN_ERR;
    }
    if (proven_egress_parse_dest(route, strlen(route), 0, &peer->route)
        != PROVEN_OK)
    {
        proven_errf(err, errlen, "%s: route: HOST:PORT", where);
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


/* d within the image's --permit patterns, added to list (once). */
static int
peers_permit(const proven_allow_t *permits, proven_allow_t *list,
    const proven_egress_dest_t *d, const char *where, char *err,
    size_t errlen)
{
    char  text[PROVEN_EGRESS_NAME_MAX + 16];

    proven_egress_dest_text(d, text, sizeof(text));
    if (!proven_allow_check(permits, d)) {
        proven_errf(err, errlen, "%s: %.160s is not one the image permits",
                    where, text);
        return PROVEN_ERR;
    }
    if (proven_allow_check(list, d)) {
        return PROVEN_OK;
    }
    return proven_allow_add(list, text, strlen(text), err, errlen);
}


/* text to path through path.tmp: a reader sees the old or the new whole. */
/* A small file whole, NUL terminated; a missing one is empty. */
static int
peers_read(const char *path, char **out, size_t *len)
{
    char  err[PROVEN_ERR_LEN];

    if (access(path, F_OK) != 0 && errno == ENOENT) {
        *out = strdup("");
        *len = 0;
        return *out != NULL ? PROVEN_OK : PROVEN_ERR;
    }
    return proven_read_file(path, PEERS_FILE_MAX, (uint8_t **) out, len, err,
                            sizeof(err));
}


/* The list as --extra lines (NULL out of memory). */
static char *
peers_list_text(const proven_allow_t *list)
{
    char    *text;
    size_t   i, off, cap;

    cap = list->n * (PROVEN_EGRESS_NAME_MAX + 16) + 1;
    text = malloc(cap);
    if (text == NULL) {
        return NULL;
    }
    off = 0;
    text[0] = '\0';
    for (i = 0; i < list->n; i++) {
        proven_egress_dest_text(&list->entries[i], text + off, cap - off - 1);
        off += strlen(text + off);
        text[off++] = '\n';
        text[off] = '\0';
    }
    return text;
}


/* The image's cluster template: an object that names no node or peers. */
static json_t *
peers_template(const agent_peers_t *ap, char *err, size_t errlen)
{
    json_t        *t;
    json_error_t   jerr;

    t = json_load_file(ap->template, JSON_REJECT_DUPLICATES, &jerr);
    if (t == NULL || !json_is_object(t)
        || json_object_get(t, "node") != NULL
        || json_object_get(t, "peers") != NULL)
    {
        proven_errf(err, errlen, "the image's cluster template %.100s: %s",
                    ap->template, t == NULL ? jerr.text
                                            : "an object without node and "
                                              "peers expected");
        json_decref(t);
        return NULL;
    }
    return t;
}


/* {"name", "attestation", "route": the forward's port} into peers. */
static int
peers_json_add(json_t *peers, const peers_peer_t *peer, unsigned port)
{
    char     route[32];
    json_t  *o;

    snprintf(route, sizeof(route), "127.0.0.1:%u", port);
    o = json_pack("{s:s, s:s, s:s}", "name", peer->name, "attestation",
                  peer->url, "route", route);
    return o != NULL && json_array_append_new(peers, o) == 0 ? PROVEN_OK
                                                             : PROVEN_ERR;
}


static int
peers_write_json(const char *path, json_t *j, char *err, size_t errlen)
{
    int    rc;
    char  *text;

    text = json_dumps(j, JSON_INDENT(1) | JSON_SORT_KEYS);
    if (text == NULL) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }
    rc = agent_write_file(path, text, err, errlen);
    free(text);
    return rc;
}


int
agent_peers_initialize(const agent_peers_t *ap, const cbor_item_t *allow,
    const cbor_item_t *cluster, const char **code, char *err, size_t errlen)
{
    int                    rc;
    char                   entry[PROVEN_EGRESS_NAME_MAX + 16], where[48];
    char                   node[PEERS_NAME_MAX + 1], *text, line[400];
    char                  *fwd;
    size_t                 i, j, n, npeers;
    json_t                *conf, *peers;
    cbor_item_t           *list;
    struct cbor_pair      *pairs;
    proven_allow_t         permits, add;
    peers_peer_t          *peer;
    proven_egress_dest_t   d;

    n = 0;
    if (allow != NULL) {
        if (!cbor_isa_array(allow)
            || cbor_array_size(allow) > PROVEN_ALLOW_MAX)
        {
            proven_errf(err, errlen, "config.allow: a list of HOST:PORT, at "
                        "most %d", PROVEN_ALLOW_MAX);
            return PROVEN_ERR;
        }
        n = cbor_array_size(allow);
    }
    npeers = 0;
    list = NULL;
    if (cluster != NULL) {
        if (ap->template == NULL) {
            proven_errf(err, errlen, "config.cluster: this image is not "
                        "made to cluster");
            return PROVEN_ERR;
        }
        pairs = cbor_isa_map(cluster) ? cbor_map_handle(cluster) : NULL;
        for (i = 0; pairs != NULL && i < cbor_map_size(cluster); i++) {
            if (proven_cbor_text_into(pairs[i].key, entry, sizeof(entry))
                != PROVEN_OK
                || (strcmp(entry, "node") != 0 && strcmp(entry, "peers") != 0))
            {
                pairs = NULL;
            }
        }
        list = proven_cbor_map_get(cluster, "peers");
        if (pairs == NULL
            || proven_cbor_text_into(proven_cbor_map_get(cluster, "node"),
                                     node, sizeof(node)) != PROVEN_OK
            || !peers_word(node)
            || list == NULL || !cbor_isa_array(list)
            || cbor_array_size(list) < 1 || cbor_array_size(list) > PEERS_MAX)
        {
            proven_errf(err, errlen, "config.cluster: {\"node\": NAME, "
                        "\"peers\": [1 to %d of {name, attestation, "
                        "route}]}, and nothing else (the rest is the "
                        "image's)", PEERS_MAX);
            return PROVEN_ERR;
        }
        npeers = cbor_array_size(list);
    }
    if (n == 0 && npeers == 0) {
        return PROVEN_OK;
    }
    if (ap->extra == NULL || ap->permit == NULL) {
        proven_errf(err, errlen, "config: this image permits no additions "
                    "to its egress");
        return PROVEN_ERR;
    }

    rc = PROVEN_ERR;
    text = fwd = NULL;
    conf = NULL;
    peer = calloc(npeers + 1, sizeof(*peer));
    proven_allow_init(&permits);
    proven_allow_init(&add);
    if (peer == NULL) {
        proven_errf(err, errlen, "out of memory");
        goto done;
    }
    if (proven_allow_load(&permits, ap->permit, err, errlen) != PROVEN_OK) {
        *code = "internal";
        goto done;
    }
    for (i = 0; i < n; i++) {
        snprintf(where, sizeof(where), "config.allow[%zu]", i);
        if (proven_cbor_text_into(cbor_array_handle(allow)[i], entry,
                                  sizeof(entry)) != PROVEN_OK
            || proven_egress_parse_dest(entry, strlen(entry), 0, &d)
               != PROVEN_OK)
        {
            proven_errf(err, errlen, "%s: not HOST:PORT", where);
            goto done;
        }
        if (peers_permit(&permits, &add, &d, where, err, errlen)
            != PROVEN_OK)
        {
            goto done;
        }
    }
    for (i = 0; i < npeers; i++) {
        snprintf(where, sizeof(where), "config.cluster.peers[%zu]", i);
        if (peers_parse(cbor_array_handle(list)[i], &peer[i], where, err,
                        errlen) != PROVEN_OK
            || peers_permit(&permits, &add, &peer[i].at, where, err, errlen)
               != PROVEN_OK
            || peers_permit(&permits, &add, &peer[i].route, where, err,
                            errlen) != PROVEN_OK)
        {
            goto done;
        }
        for (j = 0; j < i; j++) {
            if (strcmp(peer[i].name, peer[j].name) == 0) {
                break;
            }
        }
        if (j < i || strcmp(peer[i].name, node) == 0) {
            proven_errf(err, errlen, "%s: the name %s is taken", where,
                        peer[i].name);
            goto done;
        }
    }

    if (add.n > PEERS_ADDITIONS_MAX) {
        proven_errf(err, errlen, "config: %zu destinations added, %d at "
                    "most", add.n, PEERS_ADDITIONS_MAX);
        goto done;
    }

    /* from here, what fails is ours */
    *code = "internal";
    if (npeers > 0) {
        conf = peers_template(ap, err, errlen);
        peers = json_array();
        fwd = malloc(npeers * sizeof(line) + 1);
        if (conf == NULL || peers == NULL || fwd == NULL
            || json_object_set_new(conf, "peers", peers) != 0
            || json_object_set_new(conf, "node", json_string(node)) != 0)
        {
            if (conf == NULL) {
                json_decref(peers);     /* set_new was never reached */
            } else {
                proven_errf(err, errlen, "out of memory");
            }
            goto done;
        }
        fwd[0] = '\0';
        for (i = 0; i < npeers; i++) {
            proven_egress_dest_text(&peer[i].route, entry, sizeof(entry));
            snprintf(line, sizeof(line), "%u %s\n",
                     ap->forward_port + (unsigned) i, entry);
            strcat(fwd, line);
            if (peers_json_add(peers, &peer[i],
                               ap->forward_port + (unsigned) i) != PROVEN_OK)
            {
                proven_errf(err, errlen, "out of memory");
                goto done;
            }
        }
    }
    text = peers_list_text(&add);
    if (text == NULL) {
        proven_errf(err, errlen, "out of memory");
        goto done;
    }
    if (agent_write_file(ap->extra, text, err, errlen) != PROVEN_OK
        || (npeers > 0
            && (agent_write_file(ap->forwards, fwd, err, errlen) != PROVEN_OK
                || peers_write_json(ap->file, conf, err, errlen)
                   != PROVEN_OK)))
    {
        goto done;
    }
    if (npeers > 0) {
        fprintf(stderr, "agent: cluster: node %s, %zu peers\n", node, npeers);
    }
    rc = PROVEN_OK;

done:

    free(peer);
    free(text);
    free(fwd);
    json_decref(conf);
    proven_allow_free(&permits);
    proven_allow_free(&add);
    return rc;
}


/*
 * 1 when obj (a peer of the cluster file) is peer as add_peer names it:
 * the same attestation URL, and its forward (in the --forwards text) to
 * the same route; its port into port.
 */
static int
peers_same(json_t *obj, const peers_peer_t *peer, const char *forwards,
    unsigned *port)
{
    char         want[PROVEN_EGRESS_NAME_MAX + 48];
    char         route[PROVEN_EGRESS_NAME_MAX + 16];
    json_t      *v;
    const char  *line;
    size_t       len;

    v = json_object_get(obj, "attestation");
    if (!json_is_string(v) || strcmp(json_string_value(v), peer->url) != 0) {
        return 0;
    }
    v = json_object_get(obj, "route");
    if (!json_is_string(v)
        || sscanf(json_string_value(v), "127.0.0.1:%u", port) != 1)
    {
        return 0;
    }
    proven_egress_dest_text(&peer->route, route, sizeof(route));
    snprintf(want, sizeof(want), "%u %s", *port, route);
    len = strlen(want);
    for (line = forwards; *line != '\0'; line += strcspn(line, "\n")) {
        line += *line == '\n';
        if (strncmp(line, want, len) == 0
            && (line[len] == '\n' || line[len] == '\0'))
        {
            return 1;
        }
    }
    return 0;
}


/* provend's cluster.add_peer; PROVEN_AGAIN when provend is not up. */
static int
peers_tell_provend(const agent_peers_t *ap, const peers_peer_t *peer,
    unsigned port, const char **code, char *err, size_t errlen)
{
    int                 rc;
    char                text[300], route[32];
    cbor_item_t        *req;
    proven_addr_t       addr;
    proven_conn_t       c;
    proven_response_t   res;

    if (ap->provend == NULL) {
        return PROVEN_AGAIN;
    }
    snprintf(text, sizeof(text), "unix:%.280s", ap->provend);
    snprintf(route, sizeof(route), "127.0.0.1:%u", port);
    if (proven_addr_parse(text, &addr, err, errlen) != PROVEN_OK) {
        *code = "internal";
        return PROVEN_ERR;
    }
    if (proven_conn_connect(&c, &addr, PEERS_PROVEND_MS, 64 * 1024, text,
                            sizeof(text)) != PROVEN_OK)
    {
        return PROVEN_AGAIN;            /* it reads the file as it starts */
    }
    req = proven_request_new(1, "cluster.add_peer");
    if (req == NULL
        || proven_cbor_map_put(req, "name", cbor_build_string(peer->name))
           != PROVEN_OK
        || proven_cbor_map_put(req, "attestation",
                               cbor_build_string(peer->url)) != PROVEN_OK
        || proven_cbor_map_put(req, "route", cbor_build_string(route))
           != PROVEN_OK)
    {
        if (req != NULL) {
            cbor_decref(&req);
        }
        proven_conn_close(&c);
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }
    rc = proven_conn_call(&c, req, &res, text, sizeof(text));
    cbor_decref(&req);
    proven_conn_close(&c);
    if (rc != PROVEN_OK) {
        *code = "unavailable";
        proven_errf(err, errlen, "provend: %.200s", text);
        return PROVEN_ERR;
    }
    rc = PROVEN_OK;
    if (!res.ok && strcmp(res.code, "exists") != 0) {
        /* "exists": it read the file we wrote as it started */
        *code = "internal";
        proven_errf(err, errlen, "provend: %s: %.200s", res.code,
                    res.message);
        rc = PROVEN_ERR;
    }
    proven_response_free(&res);
    return rc;
}


cbor_item_t *
agent_peers_add(const agent_peers_t *ap, const proven_request_t *req,
    const char **code, char *err, size_t errlen)
{
    int                    rc;
    char                   entry[PROVEN_EGRESS_NAME_MAX + 16], line[400];
    char                  *text, *fwd, *old;
    size_t                 i, len, off;
    json_t                *conf, *peers, *v;
    unsigned               port;
    cbor_item_t           *result;
    json_error_t           jerr;
    peers_peer_t           peer;
    proven_allow_t         permits, list;

    result = NULL;
    text = fwd = old = NULL;
    conf = NULL;
    proven_allow_init(&permits);
    proven_allow_init(&list);

    if (ap->template == NULL || ap->extra == NULL || ap->permit == NULL) {
        *code = "invalid";
        proven_errf(err, errlen, "this image is not made to cluster");
        goto done;
    }
    if (peers_parse(req->map, &peer, "add_peer", err, errlen) != PROVEN_OK) {
        *code = "invalid";
        goto done;
    }
    conf = json_load_file(ap->file, JSON_REJECT_DUPLICATES, &jerr);
    peers = json_object_get(conf, "peers");
    if (conf == NULL || !json_is_array(peers)) {
        *code = "conflict";
        proven_errf(err, errlen, "this node was not initialized with a "
                    "cluster: add_peer adds to one");
        goto done;
    }
    v = json_object_get(conf, "node");
    if (json_is_string(v) && strcmp(json_string_value(v), peer.name) == 0) {
        *code = "exists";
        proven_errf(err, errlen, "%s is this node", peer.name);
        goto done;
    }
    if (peers_read(ap->forwards, &old, &len) != PROVEN_OK) {
        *code = "internal";
        proven_errf(err, errlen, "%.200s: cannot be read", ap->forwards);
        goto done;
    }
    for (i = 0; i < json_array_size(peers); i++) {
        v = json_object_get(json_array_get(peers, i), "name");
        if (json_is_string(v) && strcmp(json_string_value(v), peer.name) == 0)
        {
            /* the same peer again (an add_peer whose provend call failed
             * is asked again): provend is told again */
            if (peers_same(json_array_get(peers, i), &peer, old, &port)) {
                goto tell;
            }
            *code = "exists";
            proven_errf(err, errlen, "%s is a peer already", peer.name);
            goto done;
        }
    }
    if (json_array_size(peers) >= PEERS_MAX) {
        *code = "too_large";
        proven_errf(err, errlen, "%d peers at most", PEERS_MAX);
        goto done;
    }
    *code = "internal";
    if (proven_allow_load(&permits, ap->permit, err, errlen) != PROVEN_OK
        || (access(ap->extra, F_OK) == 0
            && proven_allow_load(&list, ap->extra, err, errlen) != PROVEN_OK))
    {
        goto done;
    }
    *code = "invalid";
    if (peers_permit(&permits, &list, &peer.at, "add_peer", err, errlen)
        != PROVEN_OK
        || peers_permit(&permits, &list, &peer.route, "add_peer", err,
                        errlen) != PROVEN_OK)
    {
        goto done;
    }
    if (list.n > PEERS_ADDITIONS_MAX) {
        *code = "too_large";
        proven_errf(err, errlen, "%d destinations added at most",
                    PEERS_ADDITIONS_MAX);
        goto done;
    }

    /* the next port; a line an earlier, unfinished add_peer left for it
     * is replaced (egress takes a port's new destination) */
    port = ap->forward_port + (unsigned) json_array_size(peers);
    fwd = malloc(len + sizeof(line) + 1);
    text = peers_list_text(&list);
    if (fwd == NULL || text == NULL) {
        *code = "internal";
        proven_errf(err, errlen, "out of memory");
        goto done;
    }
    fwd[0] = '\0';
    snprintf(entry, sizeof(entry), "%u ", port);
    for (off = 0; off < len; off += strcspn(old + off, "\n") + 1) {
        i = strcspn(old + off, "\n");
        if (i > 0 && i < sizeof(line) && strncmp(old + off, entry,
                                                 strlen(entry)) != 0)
        {
            strncat(fwd, old + off, i);
            strcat(fwd, "\n");
        }
    }
    proven_egress_dest_text(&peer.route, entry, sizeof(entry));
    snprintf(line, sizeof(line), "%u %s\n", port, entry);
    strcat(fwd, line);
    *code = "internal";
    if (peers_json_add(peers, &peer, port) != PROVEN_OK) {
        proven_errf(err, errlen, "out of memory");
        goto done;
    }
    if (agent_write_file(ap->extra, text, err, errlen) != PROVEN_OK
        || agent_write_file(ap->forwards, fwd, err, errlen) != PROVEN_OK
        || peers_write_json(ap->file, conf, err, errlen) != PROVEN_OK)
    {
        goto done;
    }
    fprintf(stderr, "agent: cluster: peer %s added, route %s by "
            "127.0.0.1:%u\n", peer.name, entry, port);

tell:

    rc = peers_tell_provend(ap, &peer, port, code, err, errlen);
    if (rc == PROVEN_ERR) {
        goto done;
    }
    result = cbor_new_definite_map(3);
    if (result == NULL
        || proven_cbor_map_put(result, "name", cbor_build_string(peer.name))
           != PROVEN_OK
        || proven_cbor_map_put(result, "port", cbor_build_uint16(
                                                   (uint16_t) port))
           != PROVEN_OK
        || proven_cbor_map_put(result, "provend",
                               cbor_build_bool(rc == PROVEN_OK)) != PROVEN_OK)
    {
        if (result != NULL) {
            cbor_decref(&result);
        }
        *code = "internal";
        proven_errf(err, errlen, "out of memory");
    }

done:

    free(text);
    free(fwd);
    free(old);
    json_decref(conf);
    proven_allow_free(&permits);
    proven_allow_free(&list);
    return result;
}
