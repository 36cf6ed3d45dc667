// Sessions and signed RPC as a client written from the Protocol v2 section
// sees them (protocol.mjs), against a local node that tests/rpc.sh started
// with examples/hello deployed as "hello" and sessions idle after 3 s.
//
//   PROVEN_URL   http://127.0.0.1:PORT     PROVEN_ROOT  the dev root (PEM)
//   PROVEN_PACKAGE  examples/hello packed (proven app pack --out)
//   PROVEN_STATUS   `proven status` of the node (its PCRs, read locally)

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { test } from 'node:test';

import * as cbor from '../../runtime/node_modules/cborg/cborg.js';
import * as p from './protocol.mjs';

const base = process.env.PROVEN_URL;
const port = Number(new URL(base).port);
const rootPem = fs.readFileSync(process.env.PROVEN_ROOT);
const packageBytes = new Uint8Array(fs.readFileSync(
    process.env.PROVEN_PACKAGE));
const origin = 'https://dapp.example';

const session = (opts = {}) => p.createSession(base, { rootPem, ...opts });
const appSession = (opts = {}) => session({ app: 'hello', origin, ...opts });

async function identify(s, keys = p.newKeyPair()) {
    const r = await p.call(s, 'Identify', p.identifyData(s, keys));
    assert.equal(r.answer.body.data.result, 'success',
                 JSON.stringify(r.answer.body.data));
    return keys;
}

function body(r) {
    assert.equal(r.status, 200, JSON.stringify(r.error));
    return r.answer.body.data;
}

test('a session binds our nonce, its id and its key in a document that '
     + 'chains to the root', async () => {
    for (const multipart of [false, true]) {
        const s = await session({ multipart });
        assert.equal(s.fields.user_data.length, 65);
        assert.equal(Buffer.from(s.fields.user_data.subarray(0, 17))
                     .toString(), 'proven-session-v1');
        assert.equal(s.fields.public_key.length, 32);
        assert.match(s.text, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
        const who = body(await p.call(s, 'WhoAmI'));
        assert.deepEqual(who, { result: 'anonymous',
                                data: { session_id: s.text, origin: null } });
    }
    /* the same document does not verify against another root */
    await assert.rejects(session({ rootPem: fs.readFileSync(new URL(
        '../fixtures/aws-nitro-root.pem', import.meta.url)) }),
        /not signed by its issuer/);
    /* nor with other PCRs expected */
    await assert.rejects(session({ pcrs: { ...p.expectedPcrs(),
                                           2: '00'.repeat(48) } }),
                         /PCR 2/);
});

test('Identify, WhoAmI and Anonymize', async () => {
    const s = await session();
    const keys = p.newKeyPair();
    /*
     * a signature over something else is refused, signed and answered:
     * the session id alone (protocol v1's proof), or the proof for
     * another app or another origin of this very session
     */
    const proofs = [
        crypto.sign(null, Buffer.from('not the id'), keys.privateKey),
        crypto.sign(null, Buffer.from(s.id), keys.privateKey),
        crypto.sign(null, p.identifyMessage(s, { app: 'hello' }),
                    keys.privateKey),
        crypto.sign(null, p.identifyMessage(s, { origin }), keys.privateKey),
    ];
    for (const bad of proofs) {
        const r = body(await p.call(s, 'Identify', {
            passkey_prf_public_key_bytes: keys.raw,
            session_id_signature_bytes: new Uint8Array(bad) }));
        assert.equal(r.result, 'failure');
        assert.match(r.data, /proven-identify-v1/);
    }
    assert.equal(body(await p.call(s, 'WhoAmI')).result, 'anonymous');
    /* the identity point as a key, "signed" with R = it and s = 0: a
     * signature of any message to OpenSSL, the identity of no one */
    const point = new Uint8Array(32);
    point[0] = 1;
    const weak = body(await p.call(s, 'Identify', {
        passkey_prf_public_key_bytes: point,
        session_id_signature_bytes: Uint8Array.from([...point,
                                                     ...new Uint8Array(32)]),
    }));
    assert.equal(weak.result, 'failure');
    assert.match(weak.data, /not an Ed25519 key anyone holds/);
    await identify(s, keys);
    const who = body(await p.call(s, 'WhoAmI'));
    assert.equal(who.result, 'identified');
    assert.deepEqual(new Uint8Array(who.data.identity), keys.raw);
    assert.equal(body(await p.call(s, 'Anonymize')).result, 'success');
    assert.equal(body(await p.call(s, 'WhoAmI')).result, 'anonymous');
});

test('create an application, allow an origin, deploy and Execute it',
     async () => {
    const s = await session();
    assert.equal(body(await p.call(s, 'CreateApplication')).result,
                 'failure');                    /* anonymous: refused */
    const owner = await identify(s);
    const created = body(await p.call(s, 'CreateApplication'));
    assert.equal(created.result, 'success');
    const id = created.data.application_id;
    assert.match(id, /^[0-9a-f-]{36}$/);

    /* no session for a page of an origin the app did not allow... unless
     * the node allows any (local mode, as here) */
    assert.equal(body(await p.call(s, 'AddAllowedOrigin',
                                   { application_id: id, origin }))
                 .result, 'success');
    assert.deepEqual(body(await p.call(s, 'ListApplicationsByOwner')),
                     { result: 'success', data: [id] });

    /* another identity may not deploy it */
    const stranger = await session();
    await identify(stranger);
    const refused = body(await p.call(stranger, 'Deploy', {
        application_id: id, package: packageBytes }));
    assert.equal(refused.result, 'failure');

    const deployed = body(await p.call(s, 'Deploy', {
        application_id: id, package: packageBytes }));
    assert.equal(deployed.result, 'success', JSON.stringify(deployed));
    assert.equal(deployed.data.seq, 1);

    /* the audit log names the owner and the session it acted in */
    const audit = await (await fetch(`${base}/app/${id}/audit`)).json();
    assert.equal(audit.entries[0].signer,
                 Buffer.from(owner.raw).toString('hex'));
    assert.equal(audit.entries[0].session,
                 Buffer.from(s.id).toString('hex'));
    assert.equal(audit.entries[0].origin, '');

    const a = await session({ app: id, origin });
    const ran = body(await p.call(a, 'Execute', {
        handler: 'index.js#sum', args: [40, 2] }));
    assert.equal(ran.result, 'success');
    assert.equal(ran.data.output, 42);
    assert.ok(ran.data.duration_us > 0);
    /* Proven's specifiers name the same handler */
    assert.equal(body(await p.call(a, 'Execute', {
        handler: 'file:///index.js#sum', args: [40, 3] })).data.output, 43);

    /*
     * an app's session never reaches the registry, even identified as
     * the owner: its page is not the owner's console
     */
    await identify(a, owner);
    for (const [type, data] of [
        ['CreateApplication', null], ['ListApplicationsByOwner', null],
        ['AddAllowedOrigin', { application_id: id,
                               origin: 'https://evil.example' }],
        ['Deploy', { application_id: id, package: packageBytes }]]) {
        const r = await p.call(a, type, data);
        assert.equal(r.status, 403, type);
        assert.equal(r.error.code, 'forbidden');
    }
    const after = await (await fetch(`${base}/app/${id}/audit`)).json();
    assert.equal(after.entries.length, 1);

    /* ExecuteHash: the current package runs, another is unknown */
    const hash = new Uint8Array(crypto.createHash('sha256')
        .update(packageBytes).digest());
    assert.equal(body(await p.call(a, 'ExecuteHash', {
        module_hash: hash, handler: 'index.js#sum', args: [1, 2] }))
        .data.output, 3);
    assert.equal(body(await p.call(a, 'ExecuteHash', {
        module_hash: new Uint8Array(32), handler: 'index.js#sum',
        args: [1, 2] })).result, 'HashUnknown');
});

test('Execute failures come back signed with the reason', async () => {
    const a = await appSession();
    const missing = body(await p.call(a, 'Execute', {
        handler: 'index.js#nothing', args: [] }));
    assert.equal(missing.result, 'failure');
    assert.equal(missing.data.code, 'not_found');
    const m = await session();
    assert.equal(body(await p.call(m, 'Execute', {
        handler: 'index.js#sum', args: [] })).result, 'failure');
    assert.equal(body(await p.call(a, 'NoSuchCommand')).result, 'failure');
});

test('personal storage is per identity and needs one', async () => {
    const a = await appSession();
    const b = await appSession();
    await identify(a);
    await identify(b);
    const run = async (s, h, args) => body(await p.call(s, 'Execute', {
        handler: `index.js#${h}`, args }));
    assert.equal((await run(a, 'saveNote', ['mine'])).data.output, 'mine');
    assert.equal((await run(b, 'readNote', [])).data.output, null);
    assert.equal((await run(a, 'readNote', [])).data.output, 'mine');
    const anon = await appSession();
    const r = await run(anon, 'readNote', []);
    assert.equal(r.result, 'failure');
    assert.match(r.data.error, /identified session/);
});

test('replays, other keys, other apps and bad bytes are refused unsigned',
     async () => {
    const s = await appSession();
    const first = p.command(s, 'WhoAmI', null, 5);
    assert.equal((await p.postMessage(s, first)).status, 200);
    for (const seq of [5, 4]) {
        const r = await p.postMessage(s, p.command(s, 'WhoAmI', null, seq));
        assert.equal(r.status, 409);
        assert.equal(r.error.code, 'replayed');
        assert.equal(r.type, 'application/json');
    }
    /* the same message again */
    assert.equal((await p.postMessage(s, first)).status, 409);
    /* seq 0 and 2^53 and past: malformed, not a replay (and no brick) */
    for (const seq of [0, 2 ** 53, 2 ** 64 - 1]) {
        const r = await p.postMessage(s, p.command(s, 'WhoAmI', null, seq));
        assert.equal(r.status, 400, String(seq));
        assert.equal(r.error.code, 'bad_message');
    }

    const wrongKey = p.newKeyPair();
    const forged = p.sign(wrongKey.privateKey, s.id, 6,
                          { type: 'WhoAmI', data: null });
    const r = await p.postMessage(s, forged);
    assert.equal(r.status, 401);
    assert.equal(r.error.code, 'bad_signature');

    /* signed for another session id (the AAD) */
    const other = await appSession();
    const cross = p.sign(s.keys.privateKey, other.id, 7,
                         { type: 'WhoAmI', data: null });
    assert.equal((await p.postMessage(s, cross)).status, 401);

    /* an app session at the management endpoint, and at another app */
    const m = await session();
    const mgmt = { ...s, app: undefined };
    assert.equal((await p.postMessage(mgmt, p.command(s, 'WhoAmI', null, 8)))
                 .status, 401);
    assert.equal((await p.postMessage({ ...m, app: 'hello' },
                                      p.command(m, 'WhoAmI', null, 1)))
                 .status, 401);

    /* malformed: not CBOR, not COSE, a payload that is not {type, data} */
    for (const bad of [Buffer.from('hello'), Buffer.from([0x84, 0x41]),
                       p.sign(s.keys.privateKey, s.id, 9, 'just text')]) {
        const e = await p.postMessage(s, bad);
        assert.equal(e.status, 400, JSON.stringify(e));
        assert.equal(e.error.code, 'bad_message');
    }

    const unknown = { ...s, text: crypto.randomUUID() };
    assert.equal((await p.postMessage(unknown, first)).status, 401);
    const res = await fetch(`${base}/rpc/http?session=nope`,
                            { method: 'POST', body: first });
    assert.equal(res.status, 400);
    assert.equal((await fetch(`${base}/rpc/http?session=${s.text}`))
                 .status, 405);

    /* the largest seq is accepted, and then the session goes no further */
    s.seq = 2 ** 53 - 2;
    assert.equal((await p.call(s, 'WhoAmI')).status, 200);
    const last = await p.postMessage(s, p.command(s, 'WhoAmI', null,
                                                  2 ** 53 - 1));
    assert.equal(last.status, 409);
});

test('oversized messages and session requests are refused', async () => {
    const s = await session();
    const big = await p.postMessage(s, new Uint8Array(5.5 * 1024 * 1024));
    assert.equal(big.status, 413);
    assert.equal(big.error.code, 'too_large');
    const res = await fetch(`${base}/session`, {
        method: 'POST', headers: { 'content-type': 'application/cbor' },
        body: new Uint8Array(20000) });
    assert.equal(res.status, 413);
    const text = await fetch(`${base}/session`, {
        method: 'POST', headers: { 'content-type': 'text/plain' },
        body: 'x' });
    assert.equal(text.status, 415);
    const noOrigin = await fetch(`${base}/app/hello/session`, {
        method: 'POST', headers: { 'content-type': 'application/cbor' },
        body: new Uint8Array([0xa0]) });
    assert.equal(noOrigin.status, 400);
    const noApp = await fetch(`${base}/app/nosuch/session`, {
        method: 'POST', headers: { 'content-type': 'application/cbor',
                                   origin }, body: new Uint8Array([0xa0]) });
    assert.equal(noApp.status, 400);   /* fields missing come first */
    await assert.rejects(session({ app: 'nosuch', origin }),
                         (e) => e.status === 404);
    /* a session key of small order: anyone could sign as its client */
    const point = new Uint8Array(32);
    point[0] = 1;
    const weak = await fetch(`${base}/session`, {
        method: 'POST', headers: { 'content-type': 'application/cbor' },
        body: cbor.encode({ nonce: new Uint8Array(32), public_key: point }) });
    assert.equal(weak.status, 400);
    assert.match(await weak.text(), /not an Ed25519 key anyone holds/);
});

test('a session unused for its idle time is gone', async () => {
    const s = await session();
    assert.equal((await p.call(s, 'WhoAmI')).status, 200);
    await new Promise((r) => setTimeout(r, 4500));
    const r = await p.call(s, 'WhoAmI');
    assert.equal(r.status, 401);
    assert.equal(r.error.code, 'unknown_session');
});

test('WebSocket: signed messages, ping, fragments, and refusals in order',
     async () => {
    const s = await appSession();
    const ws = await p.RawSocket.open(s, { port });
    assert.equal(ws.status, 101);
    assert.equal(body({ status: 200, ...(await ws.call(s, 'WhoAmI')) })
                 .result, 'anonymous');
    const ran = await ws.call(s, 'Execute', { handler: 'index.js#sum',
                                              args: [1, 1] });
    assert.equal(ran.answer.body.data.data.output, 2);

    ws.send(p.frame(9, Buffer.from('hi')));
    const pong = await ws.next();
    assert.equal(pong.opcode, 10);
    assert.deepEqual(Buffer.from(pong.payload), Buffer.from('hi'));

    /* one message in three fragments, a ping between them */
    const msg = p.command(s, 'WhoAmI');
    ws.send(p.frame(2, msg.subarray(0, 5), { fin: false }));
    ws.send(p.frame(9, Buffer.alloc(0)));
    ws.send(p.frame(0, msg.subarray(5, 9), { fin: false }));
    ws.send(p.frame(0, msg.subarray(9)));
    assert.equal((await ws.next()).opcode, 10);
    const answer = await ws.next();
    assert.equal(answer.opcode, 2);
    assert.equal(p.open(s.serverKey, p.answerAad(s.id, msg), answer.payload)
                 .seq, s.seq);

    /* a replay is a text frame refusal; the socket stays open */
    ws.send(p.frame(2, msg));
    const refusal = await ws.next();
    assert.equal(refusal.opcode, 1);
    assert.equal(JSON.parse(Buffer.from(refusal.payload)).error.code,
                 'replayed');
    assert.equal((await ws.call(s, 'WhoAmI')).answer.body.type, 'WhoAmI');

    ws.send(p.frame(8, Buffer.from([0x03, 0xe8])));
    assert.equal(p.closeCode(await ws.next()), 1000);
    assert.equal(await ws.next(), null);
});

test('WebSocket misuse closes with the RFC 6455 code', async () => {
    const s = await appSession();
    const cases = [
        [p.frame(1, Buffer.from('{}')), 1003],            /* text */
        [p.frame(2, Buffer.from([1]), { mask: false }), 1002],
        [p.frame(2, Buffer.from([1]), { rsv: 0x40 }), 1002],
        [p.frame(0, Buffer.from([1])), 1002],             /* stray cont */
        [p.frame(9, Buffer.alloc(126)), 1002],            /* big ping */
        [p.frame(3, Buffer.from([1])), 1002],             /* opcode 3 */
        [p.frame(2, Buffer.alloc(6 * 1024 * 1024)), 1009],
    ];
    for (const [bytes, code] of cases) {
        const ws = await p.RawSocket.open(s, { port });
        assert.equal(ws.status, 101);
        ws.send(bytes);
        assert.equal(p.closeCode(await ws.next()), code);
        ws.end();
    }

    /* a handshake for an unknown session is a 401, not an upgrade */
    const ghost = { ...s, text: crypto.randomUUID() };
    const ws = await p.RawSocket.open(ghost, { port });
    assert.equal(ws.status, 401);
    ws.end();
});

test('provend limits one session\'s messages, WebSocket frames included',
     async () => {
    const s = await appSession();
    const ws = await p.RawSocket.open(s, { port });
    let answered = 0;
    let limited = 0;
    for (let i = 0; i < 160; i++) {
        const r = await ws.call(s, 'WhoAmI');
        if (r.refusal) {
            assert.equal(r.refusal.code, 'rate_limited');
            limited++;
        } else {
            answered++;
        }
    }
    assert.ok(answered >= 100, `${answered} answered`);
    assert.ok(limited > 0, 'none refused');
    /* the socket stays open, and a moment later the session goes on */
    await new Promise((r) => setTimeout(r, 200));
    assert.equal((await ws.call(s, 'WhoAmI')).answer.body.type, 'WhoAmI');
    ws.end();
    const r = await p.call(s, 'WhoAmI');
    assert.equal(r.status, 200);
});

test('many sessions at once over WebSocket keep their order', async () => {
    const sessions = await Promise.all(Array.from({ length: 16 },
                                                  () => appSession()));
    await Promise.all(sessions.map(async (s) => {
        const ws = await p.RawSocket.open(s, { port });
        for (let i = 0; i < 20; i++) {
            const r = await ws.call(s, 'Execute', { handler: 'index.js#sum',
                                                    args: [i, 1] });
            assert.equal(r.answer.body.data.data.output, i + 1);
        }
        ws.end();
    }));
});
