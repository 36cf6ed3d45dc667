// An attacking relay in front of the node (relay.mjs), against the client
// written from the Protocol v2 section alone: every attack ends in a
// refusal, never in a session, an identity or an answer the relay chose.
//
//   PROVEN_URL, PROVEN_ROOT, PROVEN_STATUS: as for rpc.test.mjs

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';

import * as p from './protocol.mjs';
import { resequence, startRelay } from './relay.mjs';

const base = process.env.PROVEN_URL;
const rootPem = fs.readFileSync(process.env.PROVEN_ROOT);
const origin = 'https://dapp.example';
let relay;

before(async () => {
    relay = await startRelay(base);
});
after(() => relay.close());

const through = (opts = {}) => p.createSession(relay.url,
                                               { rootPem, ...opts });

test('the relay passing bytes through is a working path', async () => {
    relay.mode = 'pass';
    const s = await through({ app: 'hello', origin });
    const r = await p.call(s, 'Execute', { handler: 'index.js#sum',
                                           args: [2, 3] });
    assert.equal(r.answer.body.data.data.output, 5);
});

test('hijack: a genuine document of the relay\'s own session is refused',
     async () => {
    relay.mode = 'hijack';
    await assert.rejects(through(), /user_data does not bind a session to our key/);
    await assert.rejects(through({ app: 'hello', origin }),
                         /user_data does not bind/);
});

test('hijack: a document minted by /attestation for the relay\'s key',
     async () => {
    relay.mode = 'attestation';
    await assert.rejects(through(), /user_data does not bind/);
    /* and /attestation never mints the session mark for a caller */
    const ud = Buffer.concat([Buffer.from('proven-session-v1'),
                              Buffer.alloc(48)]).toString('base64url');
    const res = await fetch(`${base}/attestation?nonce=01&user_data=${ud}`
                            + `&public_key=${Buffer.alloc(32, 0x11)
                                .toString('base64url')}`);
    assert.equal(res.status, 400);
    assert.match(await res.text(), /user_data/);
});

test('key swap: the node binds the relay\'s key, the client sees it',
     async () => {
    relay.mode = 'key-swap';
    await assert.rejects(through(), /user_data does not bind/);
});

test('replay with a higher seq: the seq is signed', async () => {
    relay.mode = 'pass';
    const s = await through({ app: 'hello', origin });
    await p.call(s, 'Execute', { handler: 'index.js#sum', args: [1, 2] });
    const captured = s.last;
    /* as is: a replay; under any other seq: not the client's signature */
    assert.equal((await p.postMessage(s, captured)).status, 409);
    for (const seq of [s.seq + 1, s.seq + 1000, 2 ** 53 - 1]) {
        const r = await p.postMessage(s, resequence(captured, seq));
        assert.equal(r.status, 401, String(seq));
        assert.equal(r.error.code, 'bad_signature');
    }
    /* nothing of it took a seq: the client goes on */
    assert.equal((await p.call(s, 'WhoAmI')).status, 200);
});

test('an earlier request re-sent in place of the next: no answer to it',
     async () => {
    relay.mode = 'pass';
    const s = await through({ app: 'hello', origin });
    await p.call(s, 'Execute', { handler: 'index.js#sum', args: [1, 2] });
    relay.mode = 'resequence';
    const r = await p.call(s, 'Execute', { handler: 'index.js#sum',
                                           args: [5, 5] });
    /* v1 answered 3, signed for this seq: the client took it for 5 + 5 */
    assert.equal(r.status, 401);
    assert.equal(r.error.code, 'bad_signature');
});

test('answers held back and swapped: refused, bound to their request',
     async () => {
    relay.mode = 'pass';
    const s = await through({ app: 'hello', origin });
    relay.mode = 'answer-swap';
    relay.heldAnswer = null;
    /* the first answer goes through (nothing held yet) */
    const first = await p.call(s, 'Execute', { handler: 'index.js#sum',
                                               args: [1, 1] });
    assert.equal(first.answer.body.data.data.output, 2);
    /* the second gets the first's answer: another request's */
    await assert.rejects(p.call(s, 'Execute', { handler: 'index.js#sum',
                                                args: [2, 2] }),
                         /not signed by the session key over this request/);
    relay.mode = 'pass';
});

test('Identify replayed after Anonymize, as is or re-sequenced', async () => {
    relay.mode = 'pass';
    const s = await through();
    const keys = p.newKeyPair();
    assert.equal((await p.call(s, 'Identify', p.identifyData(s, keys)))
                 .answer.body.data.result, 'success');
    const identify = s.last;
    assert.equal((await p.call(s, 'Anonymize')).status, 200);
    assert.equal((await p.postMessage(s, identify)).status, 409);
    const r = await p.postMessage(s, resequence(identify, s.seq + 1));
    assert.equal(r.status, 401);
    assert.equal((await p.call(s, 'WhoAmI')).answer.body.data.result,
                 'anonymous');
});
