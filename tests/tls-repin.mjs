// The SDK's attestedFetch across a renewal of the node's certificate: a
// GET pinned to the attested key, then, once RENEWED_FILE exists (the
// test renews meanwhile), another, which is served the new key and must
// attest it before it is sent; then one to a relay serving a key of its
// own (as a host ending TLS would), which must be refused with nothing
// written to it.  Prints "before STATUS after STATUS relay CODE BYTES",
// or "refused: WHY".
// Usage: node tests/tls-repin.mjs BASE_URL ROOT_PEM READY_FILE RENEWED_FILE
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { attestedFetch } from '../sdk/src/index.mjs';

const [base, rootFile, readyFile, renewedFile] = process.argv.slice(2);
const root = fs.readFileSync(rootFile, 'utf8');
console.warn = () => {};        /* insecureAnyCode's warning: a dev node */

try {
    const f = await attestedFetch(base, { root, insecureAnyCode: true });
    const before = await f(`${base}/`);
    fs.writeFileSync(readyFile, '');
    while (!fs.existsSync(renewedFile)) {
        await new Promise((ok) => setTimeout(ok, 100));
    }
    const after = await f(`${base}/`);

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt',
        'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=relay', '-days',
        '1', '-keyout', `${dir}/k`, '-out', `${dir}/c`], { stdio: 'ignore' });
    let bytes = 0;
    const relay = tls.createServer({ key: fs.readFileSync(`${dir}/k`),
                                     cert: fs.readFileSync(`${dir}/c`) },
                                   (socket) => {
        socket.on('data', (d) => { bytes += d.length; });
        socket.on('error', () => {});
    });
    await new Promise((ok) => relay.listen(0, '127.0.0.1', ok));
    let code = 'none';
    try {
        await f(`https://127.0.0.1:${relay.address().port}/secret`,
                { method: 'POST', body: 'a body for the node alone' });
    } catch (e) {
        code = e.code;
    }
    await new Promise((ok) => setTimeout(ok, 200));
    relay.close();
    fs.rmSync(dir, { recursive: true });
    console.log(`before ${before.status} after ${after.status} `
                + `relay ${code} ${bytes}`);
} catch (e) {
    console.log(`refused: ${e.message}`);
}
