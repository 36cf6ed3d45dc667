// The SDK's attestedFetch across a renewal of the node's certificate: a
// GET pinned to the attested key, then, once RENEWED_FILE exists (the
// test renews meanwhile), another, which is served the new key and must
// attest it before it is sent.  Prints "before STATUS after STATUS", or
// "refused: WHY".
// Usage: node tests/tls-repin.mjs BASE_URL ROOT_PEM READY_FILE RENEWED_FILE
import fs from 'node:fs';
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
    console.log(`before ${before.status} after ${after.status}`);
} catch (e) {
    console.log(`refused: ${e.message}`);
}
