// Radix NFT scopes (daemon/chains/radix_nft.c), from outside: sessions of
// the app "rnotes" (tests/radix/app) link accounts with ROLA and reach a
// non-fungible's storage only while an account they linked holds it, as
// the Gateway (the stand-in, tests/radix/gateway.mjs) locates it.
//   PROVEN_URL, PROVEN_ROOT, PROVEN_RADIX_GATEWAY as rola.test.mjs

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { test } from 'node:test';

import { PublicKey, RadixEngineToolkit } from '@radixdlt/radix-engine-toolkit';
import blake from 'blakejs';

import * as p from '../rpc/protocol.mjs';

const base = process.env.PROVEN_URL;
const gateway = process.env.PROVEN_RADIX_GATEWAY;
const rootPem = fs.readFileSync(process.env.PROVEN_ROOT);
const origin = 'https://rnotes.example';
const DAPP = 'account_rdx12xsvygvltz4uhsht6tdrfxktzpmnl77r0d40j8agmujgdj022sudkk';
/* a non-fungible resource of mainnet (the Ed25519 signature badge's) */
const RESOURCE = 'resource_rdx1nfxxxxxxxxxxed25sgxxxxxxxxx002236757237xxxxxxxxxed25sg';

function body(r) {
    assert.equal(r.status, 200, JSON.stringify(r.error));
    return r.answer.body.data;
}

async function ledger(path, b) {
    const r = await fetch(`${gateway}/test/${path}`, { method: 'POST',
        body: JSON.stringify(b) });
    assert.equal(r.status, 200);
}

async function wallet() {
    const keys = crypto.generateKeyPairSync('ed25519');
    const pub = new Uint8Array(keys.publicKey.export({ format: 'der',
        type: 'spki' }).subarray(-32));
    return { pub, account: await RadixEngineToolkit.Derive
        .virtualAccountAddressFromPublicKey(new PublicKey.Ed25519(pub), 1),
             key: keys.privateKey };
}

async function identified() {
    const s = await p.createSession(base, { rootPem, app: 'rnotes', origin });
    s.identity = p.newKeyPair();
    assert.equal(body(await p.call(s, 'Identify',
                                   p.identifyData(s, s.identity))).result,
                 'success');
    return s;
}

async function link(s, w) {
    const ch = body(await p.call(s, 'RadixChallenge')).data.challenge;
    const hash = blake.blake2b(Buffer.concat([
        Buffer.from('R'), Buffer.from(ch), Buffer.from([DAPP.length]),
        Buffer.from(DAPP), Buffer.from(origin)]), undefined, 32);
    const r = body(await p.call(s, 'LinkRadix', {
        account: w.account, public_key: w.pub, curve: 'curve25519',
        signature: new Uint8Array(crypto.sign(null, hash, w.key)),
        dapp_definition: DAPP }));
    assert.equal(r.result, 'success', JSON.stringify(r));
}

async function exec(s, handler, ...args) {
    return body(await p.call(s, 'Execute', { handler: `index.js#${handler}`,
                                             args }));
}
const output = (r) => {
    assert.equal(r.result, 'success', JSON.stringify(r));
    return r.data.output;
};
const failure = (r) => {
    assert.equal(r.result, 'failure', JSON.stringify(r));
    return JSON.stringify(r.data);
};

test('a note stays with its non-fungible: the account holding it reads it, '
     + 'the one it left does not', async () => {
    const alice = await wallet();
    const bob = await wallet();
    const a = await identified();
    const b = await identified();
    await link(a, alice);
    await link(b, bob);
    await ledger('nft', { resource: RESOURCE, id: '#1#',
                          holder: alice.account });
    await ledger('nft', { resource: RESOURCE, id: '<gold>',
                          holder: bob.account });

    assert.equal(output(await exec(a, 'writeNote', RESOURCE, '#1#',
                                   'for #1')), 'written');
    assert.equal(output(await exec(a, 'readNote', RESOURCE, '#1#')), 'for #1');
    /* bob holds another, not this one: refused, the holder said */
    assert.match(failure(await exec(b, 'readNote', RESOURCE, '#1#')),
                 new RegExp(`held by ${alice.account}`));
    assert.equal(output(await exec(b, 'readNote', RESOURCE, '<gold>')), null);

    /* it moves to bob: his now, alice refused */
    await ledger('nft', { resource: RESOURCE, id: '#1#',
                          holder: bob.account });
    assert.equal(output(await exec(b, 'readNote', RESOURCE, '#1#')), 'for #1');
    assert.match(failure(await exec(a, 'readNote', RESOURCE, '#1#')),
                 /not by an account this session linked/);

    /* burned: nobody's */
    await ledger('nft', { resource: RESOURCE, id: '#1#', holder: null,
                          burned: true });
    assert.match(failure(await exec(b, 'readNote', RESOURCE, '#1#')),
                 /burned, or held by no account/);
});

test('no linked account, a bad id, a Gateway kept away: refused, said',
     async () => {
    const s = await identified();
    assert.match(failure(await exec(s, 'readNote', RESOURCE, '#1#')),
                 /session that linked the holder.s account \(LinkRadix\)/);
    const anon = await p.createSession(base, { rootPem, app: 'rnotes',
                                               origin });
    assert.match(failure(await exec(anon, 'readNote', RESOURCE, '#1#')),
                 /identified session/);

    const w = await wallet();
    await link(s, w);
    await ledger('nft', { resource: RESOURCE, id: '#2#', holder: w.account });
    assert.match(failure(await exec(s, 'readNote', RESOURCE, '#02#')),
                 /non-fungible id/);
    assert.match(failure(await exec(s, 'readNote', 'resource_rdx1qq', '#2#')),
                 /resource is its address/);
    await ledger('mode', { mode: 'down' });
    try {
        assert.match(failure(await exec(s, 'readNote', RESOURCE, '#2#')),
                     /the Gateway.s \/state\/non-fungible\/location: HTTP status not 200/);
    } finally {
        await ledger('mode', { mode: 'none' });
    }
    assert.equal(output(await exec(s, 'readNote', RESOURCE, '#2#')), null);
});

test('an app sees who its call runs for: the identity and the accounts its '
     + 'session linked', async () => {
    const s = await identified();
    const w = await wallet();
    await link(s, w);
    assert.deepEqual(output(await exec(s, 'whoami')), {
        identity: Buffer.from(s.identity.raw).toString('hex'),
        accounts: { ethereum: [], radix: [w.account] } });
    /* another identity: the links were the last one's */
    assert.equal(body(await p.call(s, 'Identify',
                                   p.identifyData(s, p.newKeyPair()))).result,
                 'success');
    assert.deepEqual(output(await exec(s, 'whoami')).accounts,
                     { ethereum: [], radix: [] });
    const anon = await p.createSession(base, { rootPem, app: 'rnotes',
                                               origin });
    assert.deepEqual(output(await exec(anon, 'whoami')), {
        identity: null, accounts: { ethereum: [], radix: [] } });
});
