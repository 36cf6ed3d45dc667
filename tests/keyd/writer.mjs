// A fast writer for tests/keyd.sh's running-node backups, over provend's
// socket: one request at a time, as a client that waits for each answer.
//   node writer.mjs SOCKET fill     64 KiB values into KV and SQL, 6 MB of
//                                   each, so that a backup takes a while
//   node writer.mjs SOCKET write N ACKED
//                                   for i in 1..N: kv.set w<i>, then an SQL
//                                   row i; i written to ACKED once both
//                                   are answered

import fs from 'node:fs';
import net from 'node:net';

import * as cbor from '../../runtime/node_modules/cborg/cborg.js';

const [socket, mode, count, acked] = process.argv.slice(2);
const conn = net.connect(socket);
let got = Buffer.alloc(0), waiting = null, id = 0;

conn.on('data', (d) => {
    got = Buffer.concat([got, d]);
    while (got.length >= 4 && got.length >= 4 + got.readUInt32BE(0)) {
        const body = got.subarray(4, 4 + got.readUInt32BE(0));
        got = got.subarray(4 + body.length);
        const w = waiting;
        waiting = null;
        w(cbor.decode(body, { useMaps: false }));
    }
});
conn.on('error', (e) => { console.error(`writer: ${e.message}`); process.exit(1); });

function call(op, args) {
    const body = cbor.encode({ id: ++id, op, scope: { app: 'vault' }, ...args });
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length);
    conn.write(Buffer.concat([len, body]));
    return new Promise((resolve) => { waiting = resolve; }).then((res) => {
        if (!res.ok) {
            throw new Error(`${op}: ${res.error.code}: ${res.error.message}`);
        }
        return res.result;
    });
}

const sql = (text, params = []) => call('sql.execute', { sql: text, params });

if (mode === 'fill') {
    const value = 'v'.repeat(64 * 1024);
    await sql('CREATE TABLE IF NOT EXISTS bulk (b BLOB)');
    for (let i = 0; i < 96; i++) {
        await call('kv.set', { store: 'bulk', type: 'string', key: `b${i}`, value });
        await sql('INSERT INTO bulk VALUES (?)', [value]);
    }
} else {
    await sql('CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY)');
    for (let i = 1; i <= Number(count); i++) {
        await call('kv.set', { type: 'string', key: `w${i}`, value: String(i) });
        await sql('INSERT INTO t VALUES (?)', [i]);
        // whole or not at all: the test reads it meanwhile
        fs.writeFileSync(`${acked}.tmp`, `${i}\n`);
        fs.renameSync(`${acked}.tmp`, acked);
    }
}
conn.end();
