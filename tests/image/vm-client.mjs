// A client of a node booted from the image (tests/image.sh), through the
// SDK as any client would be: the attestation checked against the root and
// the PCRs `make image` printed, the session pinned to the TLS key inside.
//
//   node vm-client.mjs URL ROOT.pem PCRS.json HELLO.pkg
//
// Makes an application, deploys the package to it and runs a handler in
// an app session: prints the handler's output.

import fs from 'node:fs';

import { newIdentityKey, Session } from '../../sdk/src/index.mjs';

const [url, rootFile, pcrsFile, packageFile] = process.argv.slice(2);
const root = fs.readFileSync(rootFile, 'utf8');
const pcrs = JSON.parse(fs.readFileSync(pcrsFile, 'utf8'));
const pkg = new Uint8Array(fs.readFileSync(packageFile));

function ok(answer, what) {
    if (answer.result !== 'success') {
        throw new Error(`${what}: ${JSON.stringify(answer)}`);
    }
    return answer.data;
}

const manager = await Session.open(url, { root, pcrs });
ok(await manager.identify(newIdentityKey()), 'Identify');
const app = ok(await manager.createApplication(), 'CreateApplication')
    .application_id;
ok(await manager.deploy(pkg, app), 'Deploy');

const s = await Session.open(url, { app, root, pcrs,
                                    origin: 'https://dapp.example' });
console.log(ok(await s.execute('index.js#sum', 40, 2), 'Execute').output);
console.error(`app ${app}`);
