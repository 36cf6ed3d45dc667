/*
 * runOnEthereumEvent handlers: the filters a package's manifest declares
 * (runtime/lib/sandbox.mjs checked them at pack; checked again here, as a
 * package may come from anyone), kept per app until its package changes.
 */

#include "apps_int.h"
#include "chains/eth.h"


/* One handler entry of kind "ethereum" into f. */
static int
filter_parse(const cbor_item_t *h, provend_eth_filter_t *f, char *err,
    size_t errlen)
{
    char          module[PROVEND_SCHEDULE_NAME_MAX + 1];
    char          name[PROVEND_SCHEDULE_NAME_MAX + 1], event[513];
    size_t        i;
    uint64_t      confirmations;
    cbor_item_t  *topics, *t, *chain, *ev;

    memset(f, 0, sizeof(*f));
    if (proven_cbor_text_into(proven_cbor_map_get(h, "module"), module,
                              sizeof(module)) != PROVEN_OK
        || proven_cbor_text_into(proven_cbor_map_get(h, "name"), name,
                                 sizeof(name)) != PROVEN_OK
        || (size_t) snprintf(f->handler, sizeof(f->handler), "%s#%s",
                             module, name) >= sizeof(f->handler))
    {
        proven_errf(err, errlen, "an Ethereum event handler of the manifest "
                    "has no module#name");
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


int
provend_eth_filters_of(const cbor_item_t *handlers,
    provend_eth_filter_t **out, size_t *n, char *err, size_t errlen)
{
    char                   kind[16];
    size_t                 i;
    cbor_item_t           *h;
    provend_eth_filter_t  *list;

    *out = NULL;
    *n = 0;
    list = NULL;
    for (i = 0; handlers != NULL && cbor_isa_array(handlers)
                && i < cbor_array_size(handlers); i++)
    {
        h = cbor_array_handle(handlers)[i];
        if (!cbor_isa_map(h)
            || proven_cbor_text_into(proven_cbor_map_get(h, "kind"), kind,
                                     sizeof(kind)) != PROVEN_OK
            || strcmp(kind, "ethereum") != 0)
        {
            continue;
        }
        if (*n == PROVEND_ETH_FILTERS_MAX) {
            proven_errf(err, errlen, "more than %d Ethereum event handlers",
                        PROVEND_ETH_FILTERS_MAX);
            goto failed;
        }
        if (list == NULL) {
            list = calloc(PROVEND_ETH_FILTERS_MAX, sizeof(*list));
            if (list == NULL) {
                proven_errf(err, errlen, "out of memory");
                goto failed;
            }
        }
        if (filter_parse(h, &list[*n], err, errlen) != PROVEN_OK) {
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


/* app's filters, parsed once per package (a bad one: logged, none). */
static void
provend_app_eth_filters(provend_app_t *app)
{
    char           err[PROVEN_ERR_LEN];
    size_t         i;
    cbor_item_t   *pkg;

    if (app->eth_filters_gen == app->package_gen + 1) {
        return;
    }
    free(app->eth_filters);
    app->eth_filters = NULL;
    app->neth_filters = 0;
    app->eth_filters_gen = app->package_gen + 1;
    if (app->package == NULL) {
        return;
    }
    pkg = proven_cbor_load(app->package, app->package_len, err, sizeof(err));
    if (pkg == NULL
        || provend_eth_filters_of(proven_cbor_map_get(pkg, "handlers"),
                                  &app->eth_filters, &app->neth_filters, err,
                                  sizeof(err)) != PROVEN_OK)
    {
        provend_warn("apps: %s: its Ethereum event handlers are not "
                     "followed: %s", app->name, err);
    }
    if (pkg != NULL) {
        cbor_decref(&pkg);
    }
    for (i = 0; i < app->neth_filters; i++) {
        snprintf(app->eth_filters[i].app, sizeof(app->eth_filters[i].app),
                 "%s", app->name);
    }
}


int
provend_apps_eth_filters(provend_apps_t *apps, provend_eth_filter_t **out,
    size_t *n)
{
    size_t                 total;
    provend_app_t         *app;
    provend_eth_filter_t  *list;

    *out = NULL;
    *n = 0;
    total = 0;
    for (app = apps->apps; app != NULL; app = app->next) {
        provend_app_eth_filters(app);
        total += app->neth_filters;
    }
    if (total == 0) {
        return PROVEN_OK;
    }
    list = malloc(total * sizeof(*list));
    if (list == NULL) {
        return PROVEN_ERR;
    }
    for (app = apps->apps; app != NULL; app = app->next) {
        if (app->neth_filters > 0) {
            memcpy(list + *n, app->eth_filters,
                   app->neth_filters * sizeof(*list));
            *n += app->neth_filters;
        }
    }
    *out = list;
    return PROVEN_OK;
}
