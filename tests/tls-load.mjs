// Handshakes without pause against an HTTPS server, a new connection each
// (no session resumed), each verified against a CA, until STOP_FILE
// exists (60 s at most); then prints "handshakes N failed M serials K":
// K distinct leaf serials seen.  Two at once keep the server busy.
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

function once() {
    return new Promise((resolve) => {
        const req = https.get({ host, port: Number(port), servername, ca,
                                agent: false, path: '/' }, (res) => {
            serials.add(res.socket.getPeerCertificate().serialNumber);
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

async function loop() {
    while (!fs.existsSync(stopFile) && Date.now() < deadline) {
        await once();
    }
}

await Promise.all([loop(), loop()]);
console.log(`handshakes ${handshakes} failed ${failed} serials ${serials.size}`
            + (failed ? ` (${lastError})` : ''));
