// The WebSocket load of bench/rpc: SESSIONS app sessions, each on its own
// socket, sending Execute of index.js#rpcPing one message at a time for
// SECONDS.  Messages are signed before the clock starts (the client's own
// signing would otherwise take the cores the node is measured on); the
// answers' signatures are checked after it stops, on a sample.
// Prints one JSON line {msgs, seconds, rps, p50_ms, p99_ms, checked}.
//   node load.mjs URL ROOT_PEM SESSIONS SECONDS

import fs from 'node:fs';

import * as p from '../../tests/rpc/protocol.mjs';

const [url, rootFile, nSessions, seconds] = process.argv.slice(2);
const rootPem = fs.readFileSync(rootFile);
const port = Number(new URL(url).port);
const per = Math.ceil(40000 / Number(nSessions)) + 1000;   /* enough */

const clients = [];
for (let i = 0; i < Number(nSessions); i++) {
    const s = await p.createSession(url, { app: 'bench', origin:
                                           'https://bench.example', rootPem,
                                           pcrs: {} });
    const frames = [];
    const messages = [];
    for (let seq = 1; seq <= per; seq++) {
        messages.push(p.command(s, 'Execute', {
            handler: 'index.js#rpcPing', args: [seq] }, seq));
        frames.push(p.frame(2, messages[seq - 1]));
    }
    clients.push({ s, frames, messages,
                   ws: await p.RawSocket.open(s, { port }),
                   answers: [] });
}

const latencies = [];
let stop = false;
let msgs = 0;
const started = process.hrtime.bigint();

async function drive(c) {
    for (let i = 0; i < c.frames.length && !stop; i++) {
        const t0 = process.hrtime.bigint();
        c.ws.send(c.frames[i]);
        const f = await c.ws.next(10000);
        if (f === null || f.opcode !== 2) {
            throw new Error(`message ${i + 1}: ${f === null ? 'closed'
                : Buffer.from(f.payload).toString()}`);
        }
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
        if (i % 97 === 0) {
            c.answers.push([i, f.payload]);
        }
        msgs++;
    }
}

setTimeout(() => { stop = true; }, Number(seconds) * 1000);
await Promise.all(clients.map(drive));
const elapsed = Number(process.hrtime.bigint() - started) / 1e9;

let checked = 0;
for (const c of clients) {
    for (const [i, a] of c.answers) {
        const r = p.open(c.s.serverKey, p.answerAad(c.s.id, c.messages[i]),
                         a);
        if (r.body.data.result !== 'success') {
            throw new Error(JSON.stringify(r.body));
        }
        checked++;
    }
    c.ws.end();
}

latencies.sort((a, b) => a - b);
const q = (f) => latencies[Math.min(latencies.length - 1,
                                    Math.floor(f * latencies.length))];
console.log(JSON.stringify({ msgs, seconds: elapsed, rps: msgs / elapsed,
                             p50_ms: q(0.5), p99_ms: q(0.99), checked }));
