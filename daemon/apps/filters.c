/*
 * runOnEthereumEvent and runOnRadixEvent handlers: the filters a
 * package's manifest declares (runtime/lib/sandbox.mjs checked them at
 * pack; checked again here, as a package may come from anyone), kept per
 * app until its package changes.
 */

#include "apps_int.h"
#include "chains/eth.h"


/* The entry's "module#name" into handler: PROVEN_ERR with err (what:
 * "an Ethereum", "a Radix"). */
static int
filter_handler(const cbor_item_t *h, char *handler, size_t size,
    const char *what, char *err, size_t errlen)
{
    char  module[PROVEND_SCHEDULE_NAME_MAX + 1];
    char  name[PROVEND_SCHEDULE_NAME_MAX + 1];

    if (proven_cbor_text_into(proven_cbor_map_get(h, "module"), module,
                              sizeof(module)) != PROVEN_OK
        || proven_cbor_text_into(proven_cbor_map_get(h, "name"), name,
                                 sizeof(name)) != PROVEN_OK
        || (size_t) snprintf(handler, size, "%s#%s", module, name) >= size)
    {
        proven_errf(err, errlen, "%s event handler of the manifest has no "
                    "module#name", what);
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


/* One handler entry of kind "ethereum" into out. */
static int
eth_filter_parse(const cbor_item_t *h, void *out, char *err, size_t errlen)
{
    char                   event[513];
    size_t                 i;
    uint64_t               confirmations;
    cbor_item_t           *topics, *t, *chain, *ev;
    provend_eth_filter_t  *f = out;

    memset(f, 0, sizeof(*f));
    if (filter_handler(h, f->handler, sizeof(f->handler), "an Ethereum",
                       err, errlen) != PROVEN_OK)
    {
        return PROVEN_ERR;
    }
    if (provend_eth_cbor_hex(proven_cbor_map_get(h, "address"), f->address, 20)
        != PROVEN_OK)
    {
        proven_errf(err, errlen, "%s: address is not 0x and 40 hex digits",
                    f->handler);
        return PROVEN_ERR;
    }
    if (proven_cbor_uint(proven_cbor_map_get(h, "confirmations"),
                         &confirmations) != PROVEN_OK || confirmations > 128)
    {
        proven_errf(err, errlen, "%s: confirmations is not 0 to 128",
                    f->handler);
        return PROVEN_ERR;
    }
    f->confirmations = (unsigned) confirmations;
    chain = proven_cbor_map_get(h, "chain");
    if (chain != NULL && (proven_cbor_uint(chain, &f->chain) != PROVEN_OK
                          || f->chain == 0))
    {
        proven_errf(err, errlen, "%s: chain is not a chain id", f->handler);
        return PROVEN_ERR;
    }

    topics = proven_cbor_map_get(h, "topics");
    if (topics != NULL
        && (!cbor_isa_array(topics) || cbor_array_size(topics) > 4))
    {
        proven_errf(err, errlen, "%s: topics is not a list of 4 at most",
                    f->handler);
        return PROVEN_ERR;
    }
    for (i = 0; topics != NULL && i < cbor_array_size(topics); i++) {
        t = cbor_array_handle(topics)[i];
        if (cbor_is_null(t)) {
            continue;
        }
        if (provend_eth_cbor_hex(t, f->topics[i], 32) != PROVEN_OK) {
            proven_errf(err, errlen, "%s: a topic is not null nor 0x and 64 "
                        "hex digits", f->handler);
            return PROVEN_ERR;
        }
        f->topic_set |= 1u << i;
    }

    /* the event's topic: keccak of its canonical signature */
    ev = proven_cbor_map_get(h, "event");
    if (ev != NULL) {
        if (proven_cbor_text_into(ev, event, sizeof(event)) != PROVEN_OK
            || strchr(event, '(') == NULL || (f->topic_set & 1))
        {
            proven_errf(err, errlen, "%s: event is not a signature (and "
                        "topic 0 is its)", f->handler);
            return PROVEN_ERR;
        }
        provend_keccak256(event, strlen(event), f->topics[0]);
        f->topic_set |= 1;
    }
    return PROVEN_OK;
}


/*
 * The manifest's handlers of kind into one calloc()ed array of max
 * entries of size bytes, each parsed by parse: NULL when none.
 */
static int
filters_of(const cbor_item_t *handlers, const char *kind, const char *what,
    size_t max, size_t size,
    int (*parse)(const cbor_item_t *h, void *f, char *err, size_t errlen),
    void **out, size_t *n, char *err, size_t errlen)
{
    char           k[16];
    size_t         i;
    uint8_t       *list;
    cbor_item_t   *h;

    *out = NULL;
    *n = 0;
    list = NULL;
    for (i = 0; handlers != NULL && cbor_isa_array(handlers)
                && i < cbor_array_size(handlers); i++)
    {
        h = cbor_array_handle(handlers)[i];
        if (!cbor_isa_map(h)
            || proven_cbor_text_into(proven_cbor_map_get(h, "kind"), k,
                                     sizeof(k)) != PROVEN_OK
            || strcmp(k, kind) != 0)
        {
            continue;
        }
        if (*n == max) {
            proven_errf(err, errlen, "more than %zu %s event handlers", max,
                        what);
            goto failed;
        }
        if (list == NULL) {
            list = calloc(max, size);
            if (list == NULL) {
                proven_errf(err, errlen, "out of memory");
                goto failed;
            }
        }
        if (parse(h, list + *n * size, err, errlen) != PROVEN_OK) {
            goto failed;
        }
        (*n)++;
    }
    *out = list;
    return PROVEN_OK;

failed:

    free(list);
    *n = 0;
    return PROVEN_ERR;
}


int
provend_eth_filters_of(const cbor_item_t *handlers,
    provend_eth_filter_t **out, size_t *n, char *err, size_t errlen)
{
    return filters_of(handlers, "ethereum", "Ethereum",
                      PROVEND_ETH_FILTERS_MAX, sizeof(**out),
                      eth_filter_parse, (void **) out, n, err, errlen);
}


/* One handler entry of kind "radix" into out. */
static int
radix_filter_parse(const cbor_item_t *h, void *out, char *err,
    size_t errlen)
{
    size_t                   i;
    provend_radix_filter_t  *f = out;

    memset(f, 0, sizeof(*f));
    if (filter_handler(h, f->handler, sizeof(f->handler), "a Radix", err,
                       errlen) != PROVEN_OK)
    {
        return PROVEN_ERR;
    }
    /* the address's Bech32m is checked against the node's network when
     * followed (chains/radix_events.c): here, its characters */
    if (proven_cbor_text_into(proven_cbor_map_get(h, "emitter"), f->emitter,
                              sizeof(f->emitter)) != PROVEN_OK
        || strchr(f->emitter, '1') == NULL)
    {
        proven_errf(err, errlen, "%s: emitter is not an address", f->handler);
        return PROVEN_ERR;
    }
    for (i = 0; f->emitter[i] != '\0'; i++) {
        if (!((f->emitter[i] >= 'a' && f->emitter[i] <= 'z')
              || (f->emitter[i] >= '0' && f->emitter[i] <= '9')
              || f->emitter[i] == '_'))
        {
            proven_errf(err, errlen, "%s: emitter is not an address",
                        f->handler);
            return PROVEN_ERR;
        }
    }
    if (proven_cbor_text_into(proven_cbor_map_get(h, "event"), f->event,
                              sizeof(f->event)) != PROVEN_OK)
    {
        proven_errf(err, errlen, "%s: event is not a name of %d characters "
                    "at most", f->handler, PROVEND_RADIX_EVENT_MAX);
        return PROVEN_ERR;
    }
    for (i = 0; f->event[i] != '\0'; i++) {
        if (!((f->event[i] >= 'a' && f->event[i] <= 'z')
              || (f->event[i] >= 'A' && f->event[i] <= 'Z')
              || (f->event[i] >= '0' && f->event[i] <= '9')
              || f->event[i] == '_'))
        {
            proven_errf(err, errlen, "%s: event is not a name (letters, "
                        "digits, _)", f->handler);
            return PROVEN_ERR;
        }
    }
    return PROVEN_OK;
}


int
provend_radix_filters_of(const cbor_item_t *handlers,
    provend_radix_filter_t **out, size_t *n, char *err, size_t errlen)
{
    return filters_of(handlers, "radix", "Radix", PROVEND_RADIX_FILTERS_MAX,
                      sizeof(**out), radix_filter_parse, (void **) out, n,
                      err, errlen);
}


/* app's filters, parsed once per package (a bad one: logged, none of
 * that chain's). */
static void
provend_app_filters(provend_app_t *app)
{
    char           err[PROVEN_ERR_LEN];
    size_t         i;
    cbor_item_t   *pkg, *handlers;

    if (app->filters_gen == app->package_gen + 1) {
        return;
    }
    free(app->eth_filters);
    app->eth_filters = NULL;
    app->neth_filters = 0;
    free(app->radix_filters);
    app->radix_filters = NULL;
    app->nradix_filters = 0;
    app->filters_gen = app->package_gen + 1;
    if (app->package == NULL) {
        return;
    }
    pkg = proven_cbor_load(app->package, app->package_len, err, sizeof(err));
    if (pkg == NULL) {
        provend_warn("apps: %s: its event handlers are not followed: %s",
                     app->name, err);
        return;
    }
    handlers = proven_cbor_map_get(pkg, "handlers");
    if (provend_eth_filters_of(handlers, &app->eth_filters,
                               &app->neth_filters, err, sizeof(err))
        != PROVEN_OK)
    {
        provend_warn("apps: %s: its Ethereum event handlers are not "
                     "followed: %s", app->name, err);
    }
    if (provend_radix_filters_of(handlers, &app->radix_filters,
                                 &app->nradix_filters, err, sizeof(err))
        != PROVEN_OK)
    {
        provend_warn("apps: %s: its Radix event handlers are not "
                     "followed: %s", app->name, err);
    }
    cbor_decref(&pkg);
    for (i = 0; i < app->neth_filters; i++) {
        snprintf(app->eth_filters[i].app, sizeof(app->eth_filters[i].app),
                 "%s", app->name);
    }
    for (i = 0; i < app->nradix_filters; i++) {
        snprintf(app->radix_filters[i].app,
                 sizeof(app->radix_filters[i].app), "%s", app->name);
    }
}


/* Every app's filters of one chain into one malloc()ed array: the
 * filters' size, and where each app's array and count are. */
static int
provend_apps_filters(provend_apps_t *apps, size_t size, size_t list_off,
    size_t count_off, void **out, size_t *n)
{
    size_t          total, count;
    uint8_t        *list;
    provend_app_t  *app;

    *out = NULL;
    *n = 0;
    total = 0;
    for (app = apps->apps; app != NULL; app = app->next) {
        provend_app_filters(app);
        total += *(size_t *) ((uint8_t *) app + count_off);
    }
    if (total == 0) {
        return PROVEN_OK;
    }
    list = malloc(total * size);
    if (list == NULL) {
        return PROVEN_ERR;
    }
    for (app = apps->apps; app != NULL; app = app->next) {
        count = *(size_t *) ((uint8_t *) app + count_off);
        if (count > 0) {
            memcpy(list + *n * size,
                   *(void **) ((uint8_t *) app + list_off), count * size);
            *n += count;
        }
    }
    *out = list;
    return PROVEN_OK;
}


int
provend_apps_eth_filters(provend_apps_t *apps, provend_eth_filter_t **out,
    size_t *n)
{
    return provend_apps_filters(apps, sizeof(**out),
                                offsetof(provend_app_t, eth_filters),
                                offsetof(provend_app_t, neth_filters),
                                (void **) out, n);
}


int
provend_apps_radix_filters(provend_apps_t *apps,
    provend_radix_filter_t **out, size_t *n)
{
    return provend_apps_filters(apps, sizeof(**out),
                                offsetof(provend_app_t, radix_filters),
                                offsetof(provend_app_t, nradix_filters),
                                (void **) out, n);
}
