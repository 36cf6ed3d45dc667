// The host between a node and keyd: it relays every byte, and may keep or
// change them.  Frames are a 4-byte big-endian length and a CBOR body.
//   node mitm.mjs record LISTEN TARGET FILE   relay; the node's frames to
//                                             FILE.1, FILE.2, ...
//   node mitm.mjs flip LISTEN TARGET          relay; one bit of keyd's
//                                             second answer changed
//   node mitm.mjs replay - TARGET FILE        send FILE's frame to keyd,
//                                             print the answer (latin1)
//   node mitm.mjs swap LISTEN TARGET HEX      relay; the id of a backup
//                                             to restore replaced by HEX
// LISTEN and TARGET are unix socket paths.
import fs from 'node:fs';
import net from 'node:net';

import * as cbor from '../../runtime/node_modules/cborg/cborg.js';

const [mode, listen, target, file] = process.argv.slice(2);

// Calls onFrame(buffer) for each whole frame (header included).
function framer(onFrame) {
    let buf = Buffer.alloc(0);
    return (chunk) => {
        buf = Buffer.concat([buf, chunk]);
        while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
            const n = 4 + buf.readUInt32BE(0);
            onFrame(buf.subarray(0, n));
            buf = buf.subarray(n);
        }
    };
}

if (mode === 'replay') {
    const s = net.connect(target, () => s.write(fs.readFileSync(file)));
    s.on('data', framer((f) => {
        process.stdout.write(f.subarray(4).toString('latin1') + '\n');
        s.destroy();
    }));
    s.on('error', (e) => { console.error(e.message); process.exit(1); });
} else {
    let saved = 0;
    const server = net.createServer((client) => {
        const up = net.connect(target);
        let answers = 0;
        client.on('data', framer((f) => {
            if (mode === 'record') {
                fs.writeFileSync(`${file}.${++saved}`, f);
            }
            if (mode === 'swap') {
                const req = cbor.decode(f.subarray(4), { useMaps: false });
                if (req.backup_restore) {
                    req.backup_restore = Buffer.from(file, 'hex');
                    const body = cbor.encode(req);
                    f = Buffer.concat([Buffer.alloc(4), body]);
                    f.writeUInt32BE(body.length);
                }
            }
            up.write(f);
        }));
        up.on('data', framer((f) => {
            answers++;
            if (mode === 'flip' && answers === 2) {
                f = Buffer.from(f);
                f[f.length - 1] ^= 1;
            }
            client.write(f);
        }));
        const end = () => { client.destroy(); up.destroy(); };
        client.on('close', end);
        up.on('close', end);
        client.on('error', end);
        up.on('error', end);
    });
    fs.rmSync(listen, { force: true });
    server.listen(listen);
}
