// A session opened on one node of a cluster, used on another: prints one
// line per step, for tests/cluster.sh to match.  A session lives on the
// node that made it; the others hand its messages there, so its seq is
// checked once for the whole cluster.
//
//   node tests/rpc/failover.mjs URL_A URL_B ROOT_PEM
//   node tests/rpc/failover.mjs save URL ROOT_PEM FILE   a session, kept
//   node tests/rpc/failover.mjs resume URL FILE          used again at URL
//
// PROVEN_STATUS: `proven status` of a node (the PCRs to expect).

import crypto from 'node:crypto';
import fs from 'node:fs';

import * as p from './protocol.mjs';

const result = (r) => (r.status === 200 ? r.answer.body.data.result
                                         : `${r.status} ${r.error.code}`);
const args = process.argv.slice(2);

if (args[0] === 'save') {
    const [, url, root, file] = args;
    const s = await p.createSession(url, { rootPem: fs.readFileSync(root) });
    console.log(`saved: ${result(await p.call(s, 'WhoAmI'))}`);
    fs.writeFileSync(file, JSON.stringify({
        id: Buffer.from(s.id).toString('hex'), seq: s.seq,
        key: s.keys.privateKey.export({ format: 'der', type: 'pkcs8' })
            .toString('hex'),
        server: Buffer.from(s.fields.public_key).toString('hex') }));
    process.exit(0);
}

if (args[0] === 'resume') {
    const [, url, file] = args;
    const saved = JSON.parse(fs.readFileSync(file, 'utf8'));
    const id = new Uint8Array(Buffer.from(saved.id, 'hex'));
    const s = {
        base: url, id, text: p.uuidText(id), seq: saved.seq,
        keys: { privateKey: crypto.createPrivateKey({
            key: Buffer.from(saved.key, 'hex'), format: 'der',
            type: 'pkcs8' }) },
        serverKey: p.ed25519Public(Buffer.from(saved.server, 'hex')) };
    console.log(`resumed: ${result(await p.call(s, 'WhoAmI'))}`);
    process.exit(0);
}

const [a, b, root] = args;
const rootPem = fs.readFileSync(root);

const s = await p.createSession(a, { rootPem });
console.log(`on A: ${result(await p.call(s, 'WhoAmI'))}`);

const keys = p.newKeyPair();
const identify = p.command(s, 'Identify', p.identifyData(s, keys));
s.base = a;
console.log(`identify on A: ${result(await p.postMessage(s, identify))}`);

/* the same session, the next seq, on node B: there at once */
s.base = b;
console.log(`on B: ${result(await p.call(s, 'WhoAmI'))}`);

/* a seq B has passed on is refused there */
let r = await p.postMessage(s, p.command(s, 'WhoAmI', null, s.seq));
console.log(`replay on B: ${result(r)}`);

/* a message accepted on A, never seen by B, replayed on B */
s.base = a;
const onA = p.command(s, 'WhoAmI');
console.log(`then on A: ${result(await p.postMessage(s, onA))}`);
s.base = b;
console.log(`A's message replayed on B: ${result(
    await p.postMessage(s, onA))}`);

/* Anonymize on A; the Identify replayed on B, as a relay would: refused */
s.base = a;
console.log(`anonymize on A: ${result(await p.call(s, 'Anonymize'))}`);
s.base = b;
r = await p.postMessage(s, identify);
console.log(`Identify replayed on B: ${result(r)}`);
console.log(`then on B: ${result(await p.call(s, 'WhoAmI'))}`);

/* a session made on A a moment ago, used first on B */
const t = await p.createSession(a, { rootPem });
t.base = b;
console.log(`new session, first on B: ${result(await p.call(t, 'WhoAmI'))}`);
