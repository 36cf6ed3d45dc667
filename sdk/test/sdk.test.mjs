// The client package in Node: attestation checks on a genuine Nitro
// document, and sessions against the local node tests/rpc.sh started
// (PROVEN_URL, PROVEN_ROOT; examples/hello deployed as "hello").

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';

import WebSocket from 'ws';

import { answerAad, governanceMeasurements, identityFromPrf, newIdentityKey,
         openMessage, PRF_SALT, RpcError, Session, signMessage,
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

/* the PCRs the node measures, from `proven status` over its own socket */
const pcrs = url ? Object.fromEntries(Object.entries(JSON.parse(
    fs.readFileSync(process.env.PROVEN_STATUS, 'utf8')).pcrs)
    .filter(([i]) => Number(i) <= 2)) : null;

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

test('a list of expected measurements: any one of them, whole',
     async () => {
    const other = { 0: '00'.repeat(48) };
    const doc = await verifyAttestation(nitroDoc, {
        root: nitroRoot, now: nitroTime,
        pcrs: [other, { 0: PCR0, version: 7 }] });
    assert.equal(doc.timestamp, 1663263808848);
    await assert.rejects(verifyAttestation(nitroDoc, {
        root: nitroRoot, now: nitroTime, pcrs: [other, other] }),
        /none of the 2 expected measurements/);
    /* a set matches whole: PCR 0 right and PCR 1 wrong is no match */
    await assert.rejects(verifyAttestation(nitroDoc, {
        root: nitroRoot, now: nitroTime,
        pcrs: [other, { 0: PCR0, 1: '00'.repeat(48) }] }), /none of/);
    await assert.rejects(verifyAttestation(nitroDoc, {
        root: nitroRoot, now: nitroTime, pcrs: [] }), /expected/);
});

test('a passkey\'s PRF output derives one identity key', async () => {
    const { createHash } = await import('node:crypto');
    assert.deepEqual(Buffer.from(PRF_SALT),
                     createHash('sha256').update('proven-passkey-prf-v1')
                         .digest());
    const prf = new Uint8Array(32).fill(9);
    const key = await identityFromPrf(prf);
    assert.equal(key.length, 32);
    assert.deepEqual(await identityFromPrf(prf), key);
    prf[0] ^= 1;
    assert.notDeepEqual(await identityFromPrf(prf), key);
});

test('measurements from a governance contract: a bad answer is refused',
     async () => {
    const answer = (result) => async () => ({ json: async () => result });
    const contract = '0x' + '11'.repeat(20);
    await assert.rejects(governanceMeasurements('http://x', '0x12',
                                                { fetch: answer({}) }),
                         /40 hex digits/);
    await assert.rejects(governanceMeasurements('http://x', contract, {
        fetch: answer({ error: { message: 'execution reverted' } }) }),
        /execution reverted/);
    /* an offset pointing past the answer */
    await assert.rejects(governanceMeasurements('http://x', contract, {
        fetch: answer({ result: '0x' + 'ff'.repeat(32) }) }),
        /past the answer/);
    /* four empty lists: none allowed */
    const empty = [128, 160, 192, 224].map((o) => o.toString(16)
        .padStart(64, '0')).join('') + '0'.repeat(64 * 4);
    assert.deepEqual(await governanceMeasurements('http://x', contract, {
        fetch: answer({ result: '0x' + empty }) }), []);
});

test('sessions over HTTP and WebSocket against a node', node, async () => {
    const s = await Session.open(url, { app: 'hello', root, pcrs, origin,
                                        WebSocket });
    assert.equal((await s.whoAmI()).result, 'anonymous');
    const r = await s.execute('index.js#sum', 19, 23);
    assert.equal(r.result, 'success');
    assert.equal(r.data.output, 42);

    await s.connect();
    assert.equal((await s.execute('index.js#sum', 1, 2)).data.output, 3);
    assert.equal((await s.execute('file:///index.js#sum', 2, 2)).data.output,
                 4);
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
    const s = await Session.open(url, { root, pcrs });
    assert.equal((await s.whoAmI()).result, 'anonymous');

    await assert.rejects(Session.open(url, { root, pcrs: {
        ...pcrs, 1: '00'.repeat(48) } }), /PCR 1/);
    await assert.rejects(Session.open(url, { root: nitroRoot, pcrs }),
                         /pinned root/);

    /* no PCRs, or some missing: refused before anything is sent */
    await assert.rejects(Session.open(url, { root }),
                         /expected PCRs are required \(0, 1, 2 missing\)/);
    await assert.rejects(Session.open(url, { root, pcrs: { 0: pcrs[0] } }),
                         /1, 2 missing/);
    /* unless the caller says it trusts any code, out loud */
    const warned = [];
    const warn = console.warn;
    console.warn = (m) => warned.push(m);
    try {
        const any = await Session.open(url, { root, insecureAnyCode: true });
        assert.equal((await any.whoAmI()).result, 'anonymous');
    } finally {
        console.warn = warn;
    }
    assert.match(warned[0], /insecureAnyCode/);

    /* plain http anywhere but this machine is refused */
    await assert.rejects(Session.open('http://node.example', { root, pcrs }),
                         /plain http only to loopback/);
});

test('an answer signed by another key is refused', node, async () => {
    const s = await Session.open(url, { root, pcrs });
    const request = signMessage(s.privateKey, s.id, ++s.seq,
                                { type: 'WhoAmI', data: null });
    const good = await s.post(request);
    const aad = await answerAad(s.id, request);
    assert.equal(openMessage(s.serverKey, aad, good).body.type, 'WhoAmI');
    const bad = good.slice();
    bad[bad.length - 1] ^= 1;
    assert.throws(() => openMessage(s.serverKey, aad, bad),
                  /not signed by the session key/);
    /* bound to its request: not the id alone, not another request */
    assert.throws(() => openMessage(s.serverKey, s.id, good),
                  /not signed by the session key/);
    const other = signMessage(s.privateKey, s.id, s.seq,
                              { type: 'WhoAmI', data: 1 });
    assert.throws(() => openMessage(s.serverKey,
                                    new Uint8Array(48), good),
                  /not signed by the session key/);
    const otherAad = await answerAad(s.id, other);
    assert.throws(() => openMessage(s.serverKey, otherAad, good),
                  /not signed by the session key/);
});

test('an attacking relay in front of the node gets nothing past the client',
     node, async () => {
    const { startRelay } = await import('../../tests/rpc/relay.mjs');
    const relay = await startRelay(url);
    try {
        for (const mode of ['hijack', 'attestation', 'key-swap']) {
            relay.mode = mode;
            await assert.rejects(Session.open(relay.url, {
                app: 'hello', root, pcrs, origin }),
                /does not bind a session to this client's key/, mode);
        }

        relay.mode = 'pass';
        const s = await Session.open(relay.url, { app: 'hello', root, pcrs,
                                                  origin });
        assert.equal((await s.execute('index.js#sum', 1, 2)).data.output, 3);
        /* the next request swapped for the last, re-sequenced: refused */
        relay.mode = 'resequence';
        await assert.rejects(s.execute('index.js#sum', 5, 5),
                             (e) => e instanceof RpcError
                                    && e.code === 'bad_signature');
        /* answers held back and delivered late: refused */
        relay.mode = 'answer-swap';
        relay.heldAnswer = null;
        assert.equal((await s.execute('index.js#sum', 1, 1)).data.output, 2);
        await assert.rejects(s.execute('index.js#sum', 2, 2),
                             /not signed by the session key for this request/);
    } finally {
        await relay.close();
    }
});

test('over https in Node: every connection pinned to the attested TLS key',
     node, async () => {
    const https = `https://127.0.0.1:${process.env.PROVEN_HTTPS_PORT}`;
    const s = await Session.open(https, { app: 'hello', root, pcrs, origin,
                                          WebSocket });
    assert.equal((await s.execute('index.js#sum', 20, 22)).data.output, 42);
    await s.connect();
    assert.equal((await s.execute('index.js#sum', 2, 3)).data.output, 5);
    s.close();

    /* a relay ending TLS with its own certificate: refused up front */
    const { execFileSync } = await import('node:child_process');
    const os = await import('node:os');
    const path = await import('node:path');
    const nodeHttps = await import('node:https');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt',
        'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=relay', '-days',
        '1', '-keyout', `${dir}/k`, '-out', `${dir}/c`], { stdio: 'ignore' });
    const relay = nodeHttps.createServer({
        key: fs.readFileSync(`${dir}/k`), cert: fs.readFileSync(`${dir}/c`),
    }, (q, r) => {
        const up = nodeHttps.request(https + q.url, {
            method: q.method, headers: q.headers, rejectUnauthorized: false,
        }, (u) => {
            r.writeHead(u.statusCode, u.headers);
            u.pipe(r);
        });
        q.pipe(up);
    });
    await new Promise((ok) => relay.listen(0, '127.0.0.1', ok));
    try {
        await assert.rejects(Session.open(
            `https://127.0.0.1:${relay.address().port}`,
            { app: 'hello', root, pcrs, origin }),
            /TLS ends outside it/);
    } finally {
        relay.close();
        fs.rmSync(dir, { recursive: true });
    }
});

test('a Radix account linked with the wallet\'s signed challenge', node,
     async () => {
    const { default: blake } = await import(
        '../../tests/radix/node_modules/blakejs/index.js');
    const { PublicKey, RadixEngineToolkit } = await import(
        '../../tests/radix/node_modules/@radixdlt/radix-engine-toolkit/'
        + 'dist/radix-engine-toolkit.mjs');
    const crypto = await import('node:crypto');
    const dapp = 'account_rdx12xsvygvltz4uhsht6tdrfxktzpmnl77r0d40j8agmujgdj022sudkk';
    const keys = crypto.generateKeyPairSync('ed25519');
    const pub = Buffer.from(keys.publicKey.export({ format: 'der',
                                                    type: 'spki' })
        .subarray(-32));
    const address = await RadixEngineToolkit.Derive
        .virtualAccountAddressFromPublicKey(
            new PublicKey.Ed25519(new Uint8Array(pub)), 1);
    /* what a wallet does with the challenge: ROLA's message, signed */
    const wallet = async (challenge) => {
        const hash = blake.blake2b(Buffer.concat([
            Buffer.from('R'), Buffer.from(challenge, 'hex'),
            Buffer.from([dapp.length]), Buffer.from(dapp),
            Buffer.from(origin)]), undefined, 32);
        return { address, proof: { curve: 'curve25519',
                 publicKey: pub.toString('hex'),
                 signature: crypto.sign(null, hash, keys.privateKey)
                     .toString('hex') } };
    };
    const s = await Session.open(url, { app: 'hello', root, pcrs, origin });
    await assert.rejects(s.linkRadix(dapp, wallet), /identify first/);
    assert.equal((await s.identify(newIdentityKey())).result, 'success');
    const r = await s.linkRadix(dapp, wallet);
    assert.equal(r.result, 'success', JSON.stringify(r));
    assert.deepEqual(r.data, [address]);
    assert.deepEqual((await s.whoAmI()).data.radix, [address]);
    await assert.rejects(s.linkRadix(dapp, async () => ({ address })),
                         /a signed challenge is/);
});
