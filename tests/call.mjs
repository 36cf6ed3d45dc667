// One request in lib's frames (a proven-agent's control channel, provend's
// socket), its answer printed as JSON:
//   node call.mjs unix:PATH OP ARGS_JSON
// (ARGS_JSON: the request's other fields).  Exit 0 once an answer came.

import net from 'node:net';

import * as cbor from '../runtime/node_modules/cborg/cborg.js';

const [addr, op, args] = process.argv.slice(2);
const body = cbor.encode({ id: 1, op, ...JSON.parse(args ?? '{}') });
const head = Buffer.alloc(4);
head.writeUInt32BE(body.length);

const s = net.connect(addr.replace(/^unix:/, ''));
let got = Buffer.alloc(0);
s.setTimeout(20000, () => { console.error('no answer in 20 s'); process.exit(1); });
s.on('error', (e) => { console.error(e.message); process.exit(1); });
s.on('connect', () => s.write(Buffer.concat([head, body])));
s.on('data', (d) => {
    got = Buffer.concat([got, d]);
    if (got.length >= 4 && got.length >= 4 + got.readUInt32BE(0)) {
        const answer = cbor.decode(got.subarray(4, 4 + got.readUInt32BE(0)),
                                   { useMaps: false });
        console.log(JSON.stringify(answer));
        s.destroy();
    }
});
