// Radix's ROLA over a session (LinkRadix, daemon/sessions/rola.c and
// radix_link.c): proofs made as a wallet makes them, each first checked
// by Radix's own @radixdlt/rola (the reference, reading owner keys from
// the same Gateway stand-in as the node, through Radix's Gateway SDK),
// accounts derived by Radix's engine toolkit; the node must accept what
// they accept and refuse what the host, a relay or another page could
// send instead.  tests/rpc.sh runs it against its node (examples/hello).
//   PROVEN_URL, PROVEN_ROOT, PROVEN_STATUS as tests/rpc/*.test.mjs
//   PROVEN_RADIX_GATEWAY: the node's --radix-gateway (tests/radix/gateway.mjs)

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { test } from 'node:test';

import { GatewayApiClient } from '@radixdlt/babylon-gateway-api-sdk';
import { secp256k1 } from '@noble/curves/secp256k1';
import { PublicKey, RadixEngineToolkit } from '@radixdlt/radix-engine-toolkit';
import { Rola } from '@radixdlt/rola';
import blake from 'blakejs';

import * as p from '../rpc/protocol.mjs';

const base = process.env.PROVEN_URL;
const gateway = process.env.PROVEN_RADIX_GATEWAY;
const rootPem = fs.readFileSync(process.env.PROVEN_ROOT);
const origin = 'https://dapp.example';
const DAPP = 'account_rdx12xsvygvltz4uhsht6tdrfxktzpmnl77r0d40j8agmujgdj022sudkk';
const hex = (b) => Buffer.from(b).toString('hex');

async function command(s, type, data = null) {
    const r = await p.call(s, type, data);
    assert.equal(r.status, 200, JSON.stringify(r.error));
    return r.answer.body.data;
}

async function identified() {
    const s = await p.createSession(base, { rootPem, app: 'hello', origin });
    await command(s, 'Identify', p.identifyData(s, p.newKeyPair()));
    return s;
}

/* A wallet's key: its virtual account, as the engine toolkit derives it. */
async function wallet(curve = 'curve25519') {
    if (curve === 'curve25519') {
        const keys = crypto.generateKeyPairSync('ed25519');
        const pub = new Uint8Array(keys.publicKey.export({ format: 'der',
            type: 'spki' }).subarray(-32));
        return { curve, pub, account: await RadixEngineToolkit.Derive
            .virtualAccountAddressFromPublicKey(new PublicKey.Ed25519(pub), 1),
                 sign: (h) => new Uint8Array(crypto.sign(null, h,
                                                         keys.privateKey)) };
    }
    const priv = secp256k1.utils.randomPrivateKey();
    const pub = secp256k1.getPublicKey(priv, true);
    return { curve, pub, account: await RadixEngineToolkit.Derive
        .virtualAccountAddressFromPublicKey(new PublicKey.Secp256k1(pub), 1),
             sign: (h) => {
                 const sig = secp256k1.sign(h, priv);
                 return Uint8Array.from([sig.recovery,
                                         ...sig.toCompactRawBytes()]);
             } };
}

/* ROLA's message hashed, signed: what a wallet answers a challenge with */
function prove(w, challenge, { o = origin, dapp = DAPP } = {}) {
    const message = Buffer.concat([Buffer.from('R'), Buffer.from(challenge),
                                   Buffer.from([dapp.length]),
                                   Buffer.from(dapp), Buffer.from(o)]);
    const hash = blake.blake2b(message, undefined, 32);
    return { account: w.account, public_key: w.pub, curve: w.curve,
             signature: w.sign(hash), dapp_definition: dapp };
}

/* what Radix's own library says of the same proof */
async function reference(proof, challenge) {
    const rola = Rola({ expectedOrigin: origin, dAppDefinitionAddress: DAPP,
                        networkId: 1, applicationName: 'proven-test',
                        gatewayApiClient: GatewayApiClient.initialize({
                            basePath: gateway,
                            applicationName: 'proven-test' }) });
    const r = await rola.verifySignedChallenge({
        address: proof.account, type: 'account', challenge: hex(challenge),
        proof: { publicKey: hex(proof.public_key),
                 signature: hex(proof.signature), curve: proof.curve } });
    return r.isOk() ? 'ok' : r.error.reason;
}

async function challenge(s) {
    const r = await command(s, 'RadixChallenge');
    assert.equal(r.result, 'success');
    return r.data.challenge;
}

test('an account linked by its wallet\'s signed challenge (both curves)',
     async () => {
    for (const curve of ['curve25519', 'secp256k1']) {
        const s = await identified();
        const w = await wallet(curve);
        const ch = await challenge(s);
        const proof = prove(w, ch);
        assert.equal(await reference(proof, ch), 'ok');
        const r = await command(s, 'LinkRadix', proof);
        assert.equal(r.result, 'success', JSON.stringify(r));
        assert.deepEqual(r.data, [w.account]);
        assert.deepEqual((await command(s, 'WhoAmI')).data.radix,
                         [w.account]);
    }
});

test('what the reference refuses, and replays, the node refuses',
     async () => {
    const s = await identified();
    const w = await wallet();
    let ch = await challenge(s);
    const good = prove(w, ch);
    assert.equal((await command(s, 'LinkRadix', good)).result, 'success');
    /* the same proof again: its challenge is spent */
    let r = await command(s, 'LinkRadix', good);
    assert.match(r.data, /RadixChallenge first/);

    /* a signature changed */
    ch = await challenge(s);
    const bent = prove(w, ch);
    bent.signature[5] ^= 1;
    assert.equal(await reference(bent, ch), 'invalidSignature');
    r = await command(s, 'LinkRadix', bent);
    assert.match(r.data, /not that key's over ROLA's message/);

    /* signed for another page's origin */
    ch = await challenge(s);
    const elsewhere = prove(w, ch, { o: 'https://evil.example' });
    assert.equal(await reference(elsewhere, ch), 'invalidSignature');
    r = await command(s, 'LinkRadix', elsewhere);
    assert.match(r.data, /not that key's/);

    /* another account claimed with this key */
    ch = await challenge(s);
    const other = await wallet();
    const claimed = { ...prove(w, ch), account: other.account };
    assert.equal(await reference(claimed, ch), 'invalidPublicKey');
    r = await command(s, 'LinkRadix', claimed);
    assert.match(r.data, /not that key's virtual account/);

    /* the identity point as a key: its "signature" (R the identity too,
       s zero) holds for any message with OpenSSL, not with libsodium */
    ch = await challenge(s);
    const identityPoint = new Uint8Array(32);
    identityPoint[0] = 1;
    const forged = {
        account: await RadixEngineToolkit.Derive
            .virtualAccountAddressFromPublicKey(
                new PublicKey.Ed25519(identityPoint), 1),
        public_key: identityPoint, curve: 'curve25519',
        signature: Uint8Array.from([...identityPoint, ...new Uint8Array(32)]),
        dapp_definition: DAPP };
    r = await command(s, 'LinkRadix', forged);
    assert.match(r.data, /not that key's over ROLA's message/);

    /* a dApp definition shorter than ROLA's length byte allows */
    await challenge(s);
    r = await command(s, 'LinkRadix', prove(w, new Uint8Array(32),
                                             { dapp: 'account_rdx1q' }));
    assert.match(r.data, /16 to 255 characters/);

    /* not identified; bad input */
    const anon = await p.createSession(base, { rootPem, app: 'hello',
                                               origin });
    await challenge(anon);
    r = await command(anon, 'LinkRadix', prove(w, new Uint8Array(32)));
    assert.match(r.data, /identify first/);
    await challenge(s);
    r = await command(s, 'LinkRadix', { ...good, curve: 'p256' });
    assert.match(r.data, /curve25519 or secp256k1/);
    await challenge(s);
    r = await command(s, 'LinkRadix', { account: good.account });
    assert.match(r.data, /LinkRadix takes/);
});

/* the stand-in's ledger: an account's owner keys, the Gateway's mood */
async function ledger(path, body) {
    const r = await fetch(`${gateway}/test/${path}`, { method: 'POST',
        body: JSON.stringify(body) });
    assert.equal(r.status, 200);
}
const keyHash = (w) => ({
    key_hash_type: w.curve === 'curve25519' ? 'EddsaEd25519'
                                            : 'EcdsaSecp256k1',
    hash_hex: hex(blake.blake2b(w.pub, undefined, 32).subarray(-29)) });

test('an account whose owner keys changed on ledger: its new key links it, '
     + 'its first no more', async () => {
    const s = await identified();
    const first = await wallet();
    const next = await wallet('secp256k1');
    await ledger('owner-keys', { account: first.account,
                                 keys: [keyHash(next)] });
    try {
        /* the key the account was made from, replaced by its owner */
        let ch = await challenge(s);
        const old = prove(first, ch);
        assert.equal(await reference(old, ch), 'invalidPublicKey');
        let r = await command(s, 'LinkRadix', old);
        assert.equal(r.result, 'failure');
        assert.match(r.data, /not among the account's owner_keys on ledger/);

        /* the key the owner set links it, though it derives another */
        ch = await challenge(s);
        const now = { ...prove(next, ch), account: first.account };
        assert.equal(await reference(now, ch), 'ok');
        r = await command(s, 'LinkRadix', now);
        assert.equal(r.result, 'success', JSON.stringify(r));
        assert.deepEqual(r.data, [first.account]);

        /* a Gateway that leaves out the metadata asked for says nothing
         * of the keys: not taken as "never set" (the first key's again) */
        await ledger('mode', { mode: 'no-explicit' });
        try {
            const s2 = await identified();
            ch = await challenge(s2);
            r = await command(s2, 'LinkRadix', prove(first, ch));
            assert.equal(r.result, 'failure');
            assert.match(r.data, /no explicit_metadata list/);
        } finally {
            await ledger('mode', { mode: 'none' });
        }

        /* the same hash under another curve's name is not that key */
        await ledger('owner-keys', { account: first.account, keys: [{
            ...keyHash(next), key_hash_type: 'EddsaEd25519' }] });
        const again = await identified();
        ch = await challenge(again);
        r = await command(again, 'LinkRadix',
                          { ...prove(next, ch), account: first.account });
        assert.match(r.data, /not among the account's owner_keys/);
    } finally {
        await ledger('owner-keys', { account: first.account, keys: null });
    }
});

test('a Gateway the host keeps away: nothing linked, said', async () => {
    const s = await identified();
    const w = await wallet();
    await ledger('mode', { mode: 'down' });
    try {
        const ch = await challenge(s);
        const r = await command(s, 'LinkRadix', prove(w, ch));
        assert.equal(r.result, 'failure');
        assert.match(r.data, /owner keys could not be read: the Gateway's /);
        assert.equal((await command(s, 'WhoAmI')).data.radix, undefined);
    } finally {
        await ledger('mode', { mode: 'none' });
    }
    /* an account address of another network, or its checksum broken */
    const ch = await challenge(s);
    const r = await command(s, 'LinkRadix', { ...prove(w, ch),
        account: w.account.slice(0, -1)
                 + (w.account.endsWith('q') ? 'p' : 'q') });
    assert.match(r.data, /not an account address of this node's network/);
});
