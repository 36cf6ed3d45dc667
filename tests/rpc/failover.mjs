// A session opened on one node of a cluster, used on another: prints one
// line per step, for tests/cluster.sh to match.
//
//   node tests/rpc/failover.mjs URL_A URL_B ROOT_PEM

import crypto from 'node:crypto';
import fs from 'node:fs';

import * as p from './protocol.mjs';

const [a, b, root] = process.argv.slice(2);
const rootPem = fs.readFileSync(root);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const result = (r) => (r.status === 200 ? r.answer.body.data.result
                                         : `${r.status} ${r.error.code}`);

const s = await p.createSession(a, { rootPem });
console.log(`on A: ${result(await p.call(s, 'WhoAmI'))}`);

const keys = p.newKeyPair();
const sig = crypto.sign(null, Buffer.from(s.id), keys.privateKey);
console.log(`identify on A: ${result(await p.call(s, 'Identify', {
    passkey_prf_public_key_bytes: keys.raw,
    session_id_signature_bytes: new Uint8Array(sig) }))}`);

/* the same session, the next seq, on node B: signed by the same key */
s.base = b;
let who;
for (let i = 0; i < 50; i++) {
    who = result(await p.call(s, 'WhoAmI'));
    if (who === 'identified') {
        break;
    }
    await sleep(100);       /* an identity change reaches B a moment later */
}
console.log(`on B: ${who}`);

/* a seq B has seen is refused there as well */
const r = await p.postMessage(s, p.command(s, 'WhoAmI', null, s.seq));
console.log(`replay on B: ${result(r)}`);

/* Anonymize on A: B, which holds the session now, follows */
s.base = a;
console.log(`anonymize on A: ${result(await p.call(s, 'Anonymize'))}`);
s.base = b;
for (let i = 0; i < 50; i++) {
    who = result(await p.call(s, 'WhoAmI'));
    if (who === 'anonymous') {
        break;
    }
    await sleep(100);
}
console.log(`then on B: ${who}`);

/* a session made on A a moment ago, used first on B */
const t = await p.createSession(a, { rootPem });
t.base = b;
console.log(`new session, first on B: ${result(await p.call(t, 'WhoAmI'))}`);
