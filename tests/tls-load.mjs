// Handshakes without pause against an HTTPS server, a new connection each
// (no session resumed), each verified against a CA, until STOP_FILE
// exists (60 s at most), by two clients in turn-free loops, one under TLS
// 1.3, one under 1.2; then prints "handshakes N failed M serials K
// switches S": K distinct leaf serials seen, S the most times one client
// saw the serial change (1 for a swap: never the old one after the new).
// Usage: node tests/tls-load.mjs HOST:PORT SERVERNAME CA_FILE STOP_FILE
import fs from 'node:fs';
import https from 'node:https';

const [hostPort, servername, caFile, stopFile] = process.argv.slice(2);
const [host, port] = hostPort.split(':');
const ca = fs.readFileSync(caFile);
const serials = new Set();
const deadline = Date.now() + 60000;
let handshakes = 0;
let failed = 0;
let lastError = '';
let switches = 0;

function once(maxVersion, seen) {
    return new Promise((resolve) => {
        const req = https.get({ host, port: Number(port), servername, ca,
                                maxVersion, agent: false, path: '/' },
                              (res) => {
            const serial = res.socket.getPeerCertificate().serialNumber;
            serials.add(serial);
            if (seen.at(-1) !== serial) {
                seen.push(serial);
            }
            res.resume();
            res.on('end', () => {
                handshakes++;
                resolve();
            });
        });
        req.setTimeout(5000, () => req.destroy(new Error('timed out')));
        req.on('error', (e) => {
            handshakes++;
            failed++;
            lastError = e.message;
            resolve();
        });
    });
}

async function loop(maxVersion) {
    const seen = [];
    while (!fs.existsSync(stopFile) && Date.now() < deadline) {
        await once(maxVersion, seen);
    }
    switches = Math.max(switches, seen.length - 1);
}

await Promise.all([loop('TLSv1.3'), loop('TLSv1.2')]);
console.log(`handshakes ${handshakes} failed ${failed} serials ${serials.size} `
            + `switches ${switches}` + (failed ? ` (${lastError})` : ''));
