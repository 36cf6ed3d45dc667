// NFT scopes, from outside (tests/nft.sh runs it): sessions of the app
// "notes" (examples/nft-notes) identify, link Ethereum addresses with
// ganache's signatures, and reach a token's storage only while an address
// they linked owns it, as the node proves it.  Environment: PROVEN_URL,
// PROVEN_ROOT, PROVEN_STATUS (as tests/rpc), NFT_CHAIN_PORT (ganache),
// NFT_TOKENS (tokens.mjs deploy's file), NFT_MODE (the liar's mode file),
// NFT_SOCKET (provend's socket).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { test } from 'node:test';

import * as p from '../rpc/protocol.mjs';
import { linkEthereumMessage } from '../../sdk/src/index.mjs';

const here = new URL('.', import.meta.url).pathname;
const env = process.env;
const rootPem = fs.readFileSync(env.PROVEN_ROOT);

function tokens(...args) {
    return execFileSync('node', [here + 'tokens.mjs', env.NFT_CHAIN_PORT,
                                 ...args], { encoding: 'utf8' }).trim();
}
const info = env.NFT_TOKENS;
const accounts = tokens('accounts').split('\n');
const [, alice, bob, carol] = accounts;

function provend(op, args = {}) {
    const out = execFileSync('node', [here + '../call.mjs',
                                      'unix:' + env.NFT_SOCKET, op,
                                      JSON.stringify(args)],
                             { encoding: 'utf8' });
    return JSON.parse(out);
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

/* until the node follows the chain's head (blocks mined so far) */
async function followed() {
    const head = parseInt(tokens('head'), 10);
    for (let i = 0; i < 300; i++) {
        const r = provend('eth.events').result;
        if (r && r.caught_up && r.tip >= head) {
            return;
        }
        await sleep(50);
    }
    throw new Error(`the node did not reach block ${head}`);
}

/* n blocks more, and the node at the head */
async function mine(n) {
    tokens('mine', String(n));
    await followed();
}

function mode(m) {
    fs.writeFileSync(env.NFT_MODE, m);
}

function body(r) {
    assert.equal(r.status, 200, JSON.stringify(r.error));
    return r.answer.body.data;
}

async function session() {
    return p.createSession(env.PROVEN_URL, { app: 'notes', rootPem,
                                             origin: 'https://notes.example' });
}

async function identified() {
    const s = await session();
    s.identity = p.newKeyPair();
    assert.equal(body(await p.call(s, 'Identify',
                                   p.identifyData(s, s.identity))).result,
                 'success');
    return s;
}

/* what a wallet signs to link address in s (the node's format) */
function linkMessage(s, address) {
    return 'proven-link-ethereum-v1\n'
        + `address: ${address.toLowerCase()}\n`
        + `identity: ${Buffer.from(s.identity.raw).toString('hex')}\n`
        + `app: ${s.app || ''}\norigin: ${s.origin || ''}\n`
        + `session: ${p.uuidText(s.id)}`;
}

function signature(signer, text) {
    return new Uint8Array(Buffer.from(tokens('sign', signer, text).slice(2),
                                      'hex'));
}

async function link(s, address, { signer = address, message } = {}) {
    return body(await p.call(s, 'LinkEthereum', {
        address, signature: signature(signer, message ?? linkMessage(s,
                                                                  address)),
    }));
}

async function exec(s, handler, ...args) {
    return body(await p.call(s, 'Execute', { handler: `index.js#${handler}`,
                                             args }));
}

/* the error an Execute failed with: "code: message" */
function failure(r) {
    assert.equal(r.result, 'failure', JSON.stringify(r));
    return JSON.stringify(r.data);
}

const alices = [];

test('the tokens are minted while the app follows the chain', async () => {
    await followed();
    tokens('mint', info, alice, '1');
    tokens('mint', info, bob, '2');
    tokens('mint', info, alice, '115792089237316195423570985008687907853269984665640564039457584007913129639935');
    await mine(2);
    assert.equal(tokens('owner', info, '1'), alice.toLowerCase());
});

test('a session without an identity, or without a link, is refused',
     async () => {
    const anon = await session();
    assert.match(failure(await exec(anon, 'readNote', 1)),
                 /identified session/);
    const s = await identified();
    assert.match(failure(await exec(s, 'readNote', 1)), /LinkEthereum/);
    assert.equal((await exec(s, 'readCode', 1)).data.output, 'forbidden');
});

test('a link needs the address\'s own signature over this session',
     async () => {
    const s = await identified();
    /* bob's key signing for alice's address */
    let r = await link(s, alice, { signer: bob });
    assert.equal(r.result, 'failure');
    assert.match(r.data, /not that address's/);
    /* alice's signature, made for another session, replayed here */
    const other = await identified();
    r = await link(s, alice, { message: linkMessage(other, alice) });
    assert.equal(r.result, 'failure');
    /* for this session but another identity */
    const stranger = { ...s, identity: p.newKeyPair() };
    r = await link(s, alice, { message: linkMessage(stranger, alice) });
    assert.equal(r.result, 'failure');
    /* the session itself, unidentified: nothing to link to */
    const anon = await session();
    anon.identity = p.newKeyPair();
    r = await link(anon, alice);
    assert.equal(r.result, 'failure');
    assert.match(r.data, /identify first/);
    /* bad input */
    r = body(await p.call(s, 'LinkEthereum', { address: '0x12',
                                               signature: new Uint8Array(65) }));
    assert.match(r.data, /40 hex digits/);
    r = body(await p.call(s, 'LinkEthereum', { address: alice,
                                               signature: new Uint8Array(64) }));
    assert.match(r.data, /65 bytes/);
    r = body(await p.call(s, 'LinkEthereum', { address: alice,
                                               signature: new Uint8Array(65) }));
    assert.equal(r.result, 'failure');
    /* nothing was linked by any of it */
    assert.equal(body(await p.call(s, 'WhoAmI')).data.ethereum, undefined);
});

test('the owner writes and reads the note of her token', async () => {
    const s = await identified();
    /* the client package writes what the node asks signed */
    assert.equal(linkEthereumMessage(s.app, s.origin, s.id, s.identity.raw,
                                     alice), linkMessage(s, alice));
    const r = await link(s, alice);
    assert.equal(r.result, 'success', JSON.stringify(r));
    assert.deepEqual(r.data, [alice.toLowerCase()]);
    assert.deepEqual(body(await p.call(s, 'WhoAmI')).data.ethereum,
                     [alice.toLowerCase()]);
    assert.equal((await exec(s, 'readNote', 1)).data.output, null);
    assert.equal((await exec(s, 'writeNote', 1, 'for whoever holds #1'))
        .data.output, true);
    assert.equal((await exec(s, 'readNote', '1')).data.output,
                 'for whoever holds #1');
    /* the largest token id, as text */
    assert.equal((await exec(s, 'writeNote', '0x' + 'f'.repeat(64), 'max'))
        .data.output, true);
    /* an NFT's SQL database, the same way */
    assert.equal((await exec(s, 'visit', 1)).data.output, 1);
    assert.equal((await exec(s, 'visit', 1)).data.output, 2);
    alices.push(s);
});

test('another token, or another holder, is refused', async () => {
    const [a] = alices;
    assert.match(failure(await exec(a, 'readNote', 2)),
                 new RegExp(`owned by ${bob.toLowerCase()} at block`));
    assert.equal((await exec(a, 'readCode', 2)).data.output, 'not_owner');
    assert.match(failure(await exec(a, 'readNote', 3)), /has no owner/);
    assert.match(failure(await exec(a, 'badNft')), /contract is 0x/);
    const b = await identified();
    assert.equal((await link(b, bob)).result, 'success');
    assert.match(failure(await exec(b, 'readNote', 1)), /owned by/);
    assert.match(failure(await exec(b, 'visit', 1)), /owned by/);
    assert.equal((await exec(b, 'readNote', 2)).data.output, null);
});

test('a store that reads another mapping as owners has its own scope',
     async () => {
    /* alice approves bob for token 1: bob is its approvals mapping's
       entry (slot 4), which a store may name as where owners are */
    const [a] = alices;
    const b = await identified();
    assert.equal((await link(b, bob)).result, 'success');
    tokens('approve', info, alice, bob, '1');
    await mine(2);
    assert.equal((await exec(b, 'readAsApproved', 1)).data.output, null);
    assert.equal((await exec(b, 'writeAsApproved', 1, 'bob was here'))
        .data.output, true);
    assert.equal((await exec(a, 'readNote', 1)).data.output,
                 'for whoever holds #1');
    assert.equal((await exec(b, 'readAsApproved', 1)).data.output,
                 'bob was here');
    /* and alice, the owner, is not the approved address */
    assert.match(failure(await exec(a, 'readAsApproved', 1)), /owned by/);
});

test('one app\'s opens wait 16 at most while a read is held', async () => {
    const [a] = alices;
    await mine(1);
    mode('hang');                   /* eth_getProof never answered */
    const flooding = exec(a, 'flood', 100, 20);
    await sleep(1500);
    mode('none');
    const r = await flooding;
    assert.equal(r.result, 'success', JSON.stringify(r));
    /* one read held (10 s, then refused), 16 waiting, the rest busy */
    assert.deepEqual(r.data.output, { chain_unverified: 1, not_owner: 16,
                                      busy: 3 });
});

test('another Identify forgets the links', async () => {
    const s = await identified();
    assert.equal((await link(s, alice)).result, 'success');
    const before = s.identity;
    s.identity = p.newKeyPair();
    assert.equal(body(await p.call(s, 'Identify',
                                   p.identifyData(s, s.identity))).result,
                 'success');
    assert.equal(body(await p.call(s, 'WhoAmI')).data.ethereum, undefined);
    assert.match(failure(await exec(s, 'readNote', 1)), /LinkEthereum/);
    /* the same identity again keeps them */
    s.identity = before;
    body(await p.call(s, 'Identify', p.identifyData(s, s.identity)));
    assert.equal((await link(s, alice)).result, 'success');
    body(await p.call(s, 'Identify', p.identifyData(s, s.identity)));
    assert.equal((await exec(s, 'readNote', 1)).data.output,
                 'for whoever holds #1');
});

test('four addresses at most', async () => {
    const s = await identified();
    for (const a of accounts.slice(1, 5)) {
        assert.equal((await link(s, a)).result, 'success');
    }
    const r = await link(s, accounts[5]);
    assert.equal(r.result, 'failure');
    assert.match(r.data, /4 addresses/);
});

test('an endpoint that lies about the owner is not believed', async () => {
    const [a] = alices;
    const b = await identified();
    assert.equal((await link(b, bob)).result, 'success');
    /* a new block: what is known of the last one is not asked again */
    await mine(1);
    mode(`value=${bob}`);           /* the proof's own value fields: bob */
    assert.match(failure(await exec(b, 'readNote', 1)),
                 new RegExp(`owned by ${alice.toLowerCase()}`));
    assert.equal((await exec(a, 'readNote', 1)).data.output,
                 'for whoever holds #1');
    await mine(1);
    mode('storage');                /* a byte of the proof changed */
    assert.equal((await exec(a, 'readCode', 1)).data.output,
                 'chain_unverified');
    mode('none');
    assert.equal((await exec(a, 'readNote', 1)).data.output,
                 'for whoever holds #1');
});

test('a transfer moves the note with the token, once confirmed',
     async () => {
    const [a] = alices;
    const b = await identified();
    assert.equal((await link(b, bob)).result, 'success');
    tokens('transfer', info, alice, bob, '1');
    await followed();
    /* not yet 2 blocks deep: the owner is still alice */
    assert.equal((await exec(a, 'readNote', 1)).data.output,
                 'for whoever holds #1');
    await mine(2);
    assert.equal((await exec(a, 'readCode', 1)).data.output, 'not_owner');
    assert.equal((await exec(b, 'readNote', 1)).data.output,
                 'for whoever holds #1');
    assert.equal((await exec(b, 'visit', 1)).data.output, 3);
});

test('the app counts the transfers it followed', async () => {
    let got;
    for (let i = 0; i < 100; i++) {
        const res = await fetch(`${env.PROVEN_URL}/app/notes/transfers`);
        got = await res.json();
        if (got.total === 4) {
            break;
        }
        await sleep(100);
    }
    assert.equal(got.total, 4, JSON.stringify(got));    /* 3 mints, 1 move */
    const one = await (await fetch(`${env.PROVEN_URL}/app/notes/transfers/1`))
        .json();
    assert.deepEqual(one, { token: '1', transfers: 2,
                            owner: bob.toLowerCase() });
    const bad = await fetch(`${env.PROVEN_URL}/app/notes/transfers/x1`);
    assert.equal(bad.status, 400);
});
