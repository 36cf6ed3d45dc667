// For t/004-rpc.t: opens sessions straight on provend's socket and signs
// the messages the suite sends, printing them as KEY=VALUE lines (hex for
// bytes).  Usage: node rpc-forge.mjs PROVEND_SOCKET
//
// S1: a management session; M1 its WhoAmI at seq 1 (sent twice: 200 then
// 409), BADSIG a seq 2 message signed by another key, APP_S an app "web"
// session, APP_M1 its WhoAmI at seq 1.

import net from 'node:net';

import * as cbor from '../../runtime/node_modules/cborg/cborg.js';
import { newKeyPair, sign, uuidText } from '../../tests/rpc/protocol.mjs';

const sock = net.connect(process.argv[2]);
let buf = Buffer.alloc(0);
const waiting = new Map();
let nextId = 1;

sock.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
        const len = buf.readUInt32BE(0);
        const answer = cbor.decode(buf.subarray(4, 4 + len));
        buf = buf.subarray(4 + len);
        waiting.get(answer.id)(answer);
    }
});

function call(op, args) {
    const id = nextId++;
    const body = cbor.encode({ id, op, ...args });
    const head = Buffer.alloc(4);
    head.writeUInt32BE(body.length);
    sock.write(Buffer.concat([head, body]));
    return new Promise((resolve, reject) => waiting.set(id, (a) => (
        a.ok ? resolve(a.result) : reject(new Error(a.error.message)))));
}

async function session(args) {
    const keys = newKeyPair();
    const r = await call('session.create', {
        nonce: new Uint8Array([1, 2, 3]), public_key: keys.raw, ...args });
    return { keys, id: new Uint8Array(r.session) };
}

const hex = (b) => Buffer.from(b).toString('hex');
const whoami = { type: 'WhoAmI', data: null };

const s1 = await session({});
const other = newKeyPair();
console.log(`S1=${uuidText(s1.id)}`);
console.log(`M1=${hex(sign(s1.keys.privateKey, s1.id, 1, whoami))}`);
console.log(`BADSIG=${hex(sign(other.privateKey, s1.id, 2, whoami))}`);
if (process.argv[3] !== 'management') {
    const app = await session({ app: 'web', origin: 'https://t.example' });
    console.log(`APP_S=${uuidText(app.id)}`);
    console.log(`APP_M1=${hex(sign(app.keys.privateKey, app.id, 1,
                                   whoami))}`);
}
sock.end();
