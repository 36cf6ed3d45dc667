// A Radix Gateway stand-in on loopback, for provend's --radix-gateway:
// the Gateway API's calls provend makes, answered from a ledger kept here
// (transactions committed through /test/commit), every request read and
// every answer written through the models of Radix's own
// @radixdlt/babylon-gateway-api-sdk (its OpenAPI schema's): a field the
// node sends that the schema lacks is refused, an answer missing one the
// schema requires is a bug here, not a pass.
//
//   node gateway.mjs PORT READY_FILE
//
// The Gateway's calls:
//   POST /status/gateway-status, /stream/transactions,
//        /state/entity/details, /state/non-fungible/location
// The test's (what the ledger holds, and how the Gateway misbehaves):
//   POST /test/commit {events: [{emitter, name, value, module?, depth?}],
//        status?} -> {state_version}: a user transaction, its events as a
//        component's methods emit them (value: the event's one U64 field;
//        module: the emitter's object module, "Main" by default; depth:
//        the data nested that many tuples deep)
//   POST /test/filler {n}: n transactions of another emitter's
//   POST /test/owner-keys {account, keys: [{key_hash_type, hash_hex}] | null}
//   POST /test/nft {resource, id, holder | null, burned?}
//   POST /test/mode {mode}: "none", "down" (HTTP 500), "network" (it
//        answers for stokenet), "disorder" (a page's transactions out of
//        order), "hold" (no answer for 30 s), "no-explicit" (entity
//        details without the explicit_metadata asked for, as a Gateway
//        that ignores the opt-in)
// As the Gateway does, a stream asked from past the ledger's end is an
// error (400), not an empty page.
//   GET  /test/requests -> {path: count}

import fs from 'node:fs';
import http from 'node:http';

import * as gw from '@radixdlt/babylon-gateway-api-sdk';

const [port, readyFile] = process.argv.slice(2);

const ledger = { version: 1000, epoch: 100, round: 1 };
const transactions = [];        /* ascending state_version */
const ownerKeys = new Map();    /* account -> PublicKeyHash[] */
const nfts = new Map();         /* resource + ' ' + id -> {holder, burned} */
const requests = {};
let mode = 'none';

const OTHER = 'component_rdx1cptxxxxxxxxxgenssxxxxxxxxxx000977302539xxxxxxxxxgenssx';

function ledgerState() {
    return { network: mode === 'network' ? 'stokenet' : 'mainnet',
             state_version: ledger.version,
             proposer_round_timestamp: new Date(1765000000000
                                                + ledger.version).toISOString(),
             epoch: ledger.epoch, round: ledger.round };
}

/* The schema's model: through FromJSON and back, checked for what it
 * requires; what comes back is the JSON a Gateway writes. */
function modelled(name, value) {
    const back = gw[`${name}ToJSON`](gw[`${name}FromJSON`](value));
    if (!gw[`instanceOf${name}`](gw[`${name}FromJSON`](value))) {
        throw new Error(`the stand-in's ${name} lacks a required field`);
    }
    return back;
}

/* A request read through its model: every field the node sent must be
 * one the schema has (else the real Gateway would ignore it silently). */
function request(name, body) {
    const parsed = gw[`${name}FromJSON`](body);
    const known = gw[`${name}ToJSON`](parsed);
    for (const k of Object.keys(body)) {
        if (!(k in known) || known[k] === undefined) {
            const e = new Error(`${name}: no field "${k}" in the schema`);
            e.status = 400;
            throw e;
        }
    }
    return parsed;
}

function commit(events, status = 'CommittedSuccess') {
    ledger.version += 1;
    ledger.round += 1;
    const v = ledger.version;
    transactions.push({
        state_version: v, epoch: ledger.epoch, round: ledger.round,
        round_timestamp: new Date(1765000000000 + v).toISOString(),
        transaction_status: status,
        intent_hash: `txid_rdx1${String(v).padStart(8, '0')}`,
        fee_paid: '0.25',
        events: events.map((e) => {
            let data = { kind: 'Tuple', type_name: e.name,
                         fields: [{ kind: 'U64', field_name: 'value',
                                    value: String(e.value) }] };
            for (let i = 1; i < (e.depth ?? 1); i++) {
                data = { kind: 'Tuple', fields: [data] };
            }
            return {
                name: e.name,
                emitter: { type: 'Method',
                           entity: { is_global: true,
                                     entity_type: 'GlobalGenericComponent',
                                     entity_address: e.emitter },
                           object_module_id: e.module ?? 'Main' },
                data,
            };
        }),
    });
    return v;
}

function streamTransactions(body) {
    const req = request('StreamTransactionsRequest', body);
    const from = req.from_ledger_state?.state_version ?? 1;
    const limit = Math.min(req.limit_per_page ?? 100, 100);
    const emitters = req.event_global_emitters_filter ?? null;
    const wantEvents = req.opt_ins?.receipt_events === true;
    if (from > ledger.version) {
        throw Object.assign(new Error('State version is beyond the end of '
                                      + 'the known ledger'), { status: 400 });
    }
    if ((req.order ?? 'Asc') !== 'Asc') {
        throw Object.assign(new Error('the stand-in serves Asc only'),
                            { status: 400 });
    }
    let list = transactions.filter((t) => t.state_version >= from
        && (req.transaction_status_filter !== 'Success'
            || t.transaction_status === 'CommittedSuccess')
        && (emitters === null || t.events.some((e) =>
            emitters.includes(e.emitter.entity.entity_address))));
    const more = list.length > limit;
    list = list.slice(0, limit);
    let items = list.map((t) => ({
        state_version: t.state_version, epoch: t.epoch, round: t.round,
        round_timestamp: t.round_timestamp,
        transaction_status: t.transaction_status,
        intent_hash: t.intent_hash, fee_paid: t.fee_paid,
        receipt: wantEvents ? { status: t.transaction_status,
                                events: t.events }
                            : { status: t.transaction_status },
    }));
    if (mode === 'disorder' && items.length > 1) {
        items = [items[1], items[0], ...items.slice(2)];
    }
    return modelled('StreamTransactionsResponse', {
        ledger_state: ledgerState(), items,
        next_cursor: more ? `from:${list[list.length - 1].state_version + 1}`
                          : null });
}

function entityDetails(body) {
    const req = request('StateEntityDetailsRequest', body);
    const items = req.addresses.map((address) => {
        const keys = ownerKeys.get(address);
        const explicit = keys === undefined ? [] : [{
            key: 'owner_keys', is_locked: false,
            last_updated_at_state_version: ledger.version,
            /* raw_hex: SBOR-like bytes holding each hash (the node reads
             * typed; @radixdlt/rola looks for the hash in raw_hex) */
            value: { raw_hex: '5c2290' + keys.map((k) => '22'
                         + (k.key_hash_type === 'EddsaEd25519' ? '01' : '00')
                         + '01071d' + k.hash_hex).join(''),
                     programmatic_json: { kind: 'Enum', variant_id: '0',
                                          fields: [] },
                     typed: { type: 'PublicKeyHashArray', values: keys } },
        }];
        return { address, metadata: { total_count: explicit.length,
                                      items: explicit },
                 fungible_resources: { total_count: 0, items: [] },
                 non_fungible_resources: { total_count: 0, items: [] },
                 ...(mode !== 'no-explicit'
                     && req.opt_ins?.explicit_metadata?.includes('owner_keys')
                     ? { explicit_metadata: { total_count: explicit.length,
                                              items: explicit } } : {}) };
    });
    return modelled('StateEntityDetailsResponse', {
        ledger_state: ledgerState(), items });
}

function nftLocation(body) {
    const req = request('StateNonFungibleLocationRequest', body);
    return modelled('StateNonFungibleLocationResponse', {
        ledger_state: ledgerState(), resource_address: req.resource_address,
        non_fungible_ids: req.non_fungible_ids.map((id) => {
            const n = nfts.get(`${req.resource_address} ${id}`);
            if (n === undefined) {
                const e = new Error(`no non-fungible ${id}`);
                e.status = 404;
                throw e;
            }
            return {
                non_fungible_id: id, is_burned: n.burned === true,
                last_updated_at_state_version: ledger.version,
                ...(n.holder === null ? {} : {
                    owning_vault_address: 'internal_vault_rdx1tz474x29nxxd4k2p2reete9xyz4apawv63dphxkr00qt23vyju49fq',
                    owning_vault_parent_ancestor_address: n.holder,
                    owning_vault_global_ancestor_address: n.holder }),
            };
        }) });
}

const routes = {
    '/status/gateway-status': () => modelled('GatewayStatusResponse', {
        ledger_state: ledgerState(),
        release_info: { release_version: 'stand-in', open_api_schema_version:
                        '1.10.1', image_tag: 'none' } }),
    '/stream/transactions': streamTransactions,
    '/state/entity/details': entityDetails,
    '/state/non-fungible/location': nftLocation,
    '/test/commit': (b) => ({ state_version: commit(b.events, b.status) }),
    '/test/filler': (b) => {
        for (let i = 0; i < b.n; i++) {
            commit([{ emitter: OTHER, name: 'FillerEvent', value: i }]);
        }
        return { state_version: ledger.version };
    },
    '/test/owner-keys': (b) => {
        if (b.keys === null) {
            ownerKeys.delete(b.account);
        } else {
            ownerKeys.set(b.account, b.keys);
        }
        return {};
    },
    '/test/nft': (b) => {
        nfts.set(`${b.resource} ${b.id}`, { holder: b.holder,
                                            burned: b.burned });
        return {};
    },
    '/test/mode': (b) => { mode = b.mode; return {}; },
};

const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
        const path = req.url.split('?')[0];
        const send = (status, value) => {
            res.writeHead(status, { 'content-type': 'application/json' });
            res.end(JSON.stringify(value));
        };
        if (req.method === 'GET' && path === '/test/requests') {
            return send(200, requests);
        }
        const route = routes[path];
        if (req.method !== 'POST' || route === undefined) {
            return send(404, { message: `no ${req.method} ${path}` });
        }
        const testing = path.startsWith('/test/');
        if (!testing) {
            requests[path] = (requests[path] ?? 0) + 1;
            if (mode === 'down') {
                return send(500, { message: 'the stand-in is down' });
            }
            if (mode === 'hold') {
                setTimeout(() => send(500, { message: 'held' }), 30000);
                return undefined;
            }
        }
        try {
            return send(200, route(JSON.parse(body || '{}')));
        } catch (e) {
            return send(e.status ?? 500, { message: e.message,
                                           code: e.status ?? 500 });
        }
    });
});
server.listen(+port, '127.0.0.1', () => {
    fs.writeFileSync(readyFile, JSON.stringify({ port: +port }));
});
