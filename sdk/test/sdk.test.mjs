// The client package in Node: attestation checks on a genuine Nitro
// document, and sessions against the local node tests/rpc.sh started
// (PROVEN_URL, PROVEN_ROOT; examples/hello deployed as "hello").

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';

import WebSocket from 'ws';

import { newIdentityKey, openMessage, RpcError, Session, signMessage,
         verifyAttestation } from '../src/index.mjs';

const fixtures = new URL('../../tests/fixtures/', import.meta.url);
const nitroDoc = new Uint8Array(fs.readFileSync(
    new URL('nitro-real-2022-09-15.cose', fixtures)));
const nitroRoot = fs.readFileSync(new URL('aws-nitro-root.pem', fixtures),
                                  'utf8');
const nitroTime = new Date(1663263808848);
const PCR0 = 'ea4212ee889ba1b4dbfe744aadecca8b1930de60a3a1ce3b0c79f42b23170'
    + '0fc561c3d9b34f0565ed9eb6f460996624c';

const url = process.env.PROVEN_URL;
const root = url ? fs.readFileSync(process.env.PROVEN_ROOT, 'utf8') : null;
const node = { skip: url ? false : 'no node: run through tests/rpc.sh' };
const origin = 'https://sdk.example';

test('a genuine Nitro document verifies to the AWS root, PCRs checked',
     async () => {
    const doc = await verifyAttestation(nitroDoc, {
        root: nitroRoot, now: nitroTime, pcrs: { 0: PCR0 } });
    assert.equal(doc.moduleId.slice(0, 2), 'i-');
    assert.equal(doc.timestamp, 1663263808848);

    await assert.rejects(verifyAttestation(nitroDoc, {
        root: nitroRoot, now: nitroTime, pcrs: { 0: '00'.repeat(48) } }),
        /PCR 0 is not the expected measurement/);
    /* the leaf lived three hours in 2022 */
    await assert.rejects(verifyAttestation(nitroDoc, { root: nitroRoot }),
                         /not valid/);
    await assert.rejects(verifyAttestation(nitroDoc, {
        root: nitroRoot, now: nitroTime, nonce: new Uint8Array([1]) }),
        /nonce/);
    const tampered = nitroDoc.slice();
    tampered[tampered.length - 5] ^= 1;           /* in the signature */
    await assert.rejects(verifyAttestation(tampered, {
        root: nitroRoot, now: nitroTime }), /not signed by its certificate/);
});

test('sessions over HTTP and WebSocket against a node', node, async () => {
    const s = await Session.open(url, { app: 'hello', root, origin,
                                        WebSocket });
    assert.equal((await s.whoAmI()).result, 'anonymous');
    const r = await s.execute('index.js#sum', 19, 23);
    assert.equal(r.result, 'success');
    assert.equal(r.data.output, 42);

    await s.connect();
    assert.equal((await s.execute('index.js#sum', 1, 2)).data.output, 3);
    assert.equal((await s.identify(newIdentityKey())).result, 'success');
    assert.equal((await s.whoAmI()).result, 'identified');
    assert.equal((await s.execute('index.js#saveNote', 'sdk')).data.output,
                 'sdk');

    /* a refusal reaches the caller as an RpcError with its code */
    s.seq -= 1;
    await assert.rejects(s.whoAmI(), (e) => e instanceof RpcError
                                             && e.code === 'replayed');
    s.seq += 1;
    assert.equal((await s.whoAmI()).result, 'identified');
    s.close();
});

test('the document must match the expected PCRs and the pinned root', node,
     async () => {
    /* the node's own PCRs, read from a document of its own */
    const res = await fetch(`${url}/attestation?nonce=0102`);
    const doc = await verifyAttestation(new Uint8Array(await res.arrayBuffer()),
                                        { root });
    const pcr1 = Buffer.from(doc.pcrs.get(1)).toString('hex');
    const s = await Session.open(url, { root, pcrs: { 1: pcr1 } });
    assert.equal((await s.whoAmI()).result, 'anonymous');

    await assert.rejects(Session.open(url, { root, pcrs: { 1: '00'.repeat(48) } }),
                         /PCR 1/);
    await assert.rejects(Session.open(url, { root: nitroRoot }),
                         /pinned root/);
});

test('an answer signed by another key is refused', node, async () => {
    const s = await Session.open(url, { root });
    const good = await s.post(signMessage(s.privateKey, s.id, ++s.seq,
                                          { type: 'WhoAmI', data: null }));
    assert.equal(openMessage(s.serverKey, s.id, good).body.type, 'WhoAmI');
    const bad = good.slice();
    bad[bad.length - 1] ^= 1;
    assert.throws(() => openMessage(s.serverKey, s.id, bad),
                  /not signed by the session key/);
    assert.throws(() => openMessage(s.serverKey, new Uint8Array(16), good),
                  /not signed by the session key/);
});
