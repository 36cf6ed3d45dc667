// Passkeys in a cluster, for tests/cluster.sh: one line per step.
//   node tests/rpc/passkey-cluster.mjs register URL ROOT FILE
//        an identity registers a passkey through the node at URL; the
//        authenticator is kept in FILE
//   node tests/rpc/passkey-cluster.mjs login URL ROOT FILE
//        signs a session in with it through the node at URL
// PROVEN_STATUS: `proven status` of a node (the PCRs to expect).
// The app is examples/hello ("hello"), the page https://dapp.example.

import fs from 'node:fs';

import { Authenticator } from './authenticator.mjs';
import * as p from './protocol.mjs';

const [step, url, root, file] = process.argv.slice(2);
const rootPem = fs.readFileSync(root);
const s = await p.createSession(url, { rootPem, app: 'hello',
                                       origin: 'https://dapp.example' });

async function command(type, data = null) {
    const r = await p.call(s, type, data);
    if (r.status !== 200) {
        return { result: `${r.status} ${r.error.code}` };
    }
    return r.answer.body.data;
}

const challenge = async () => (await command('PasskeyChallenge')).data
    .challenge;

if (step === 'register') {
    const auth = new Authenticator();
    const keys = p.newKeyPair();
    await command('Identify', p.identifyData(s, keys));
    const r = await command('RegisterPasskey', auth.create(
        await challenge()));
    fs.writeFileSync(file, auth.save());
    fs.writeFileSync(`${file}.identity`, Buffer.from(keys.raw)
        .toString('hex'));
    console.log(`registered: ${r.result}`);
} else {
    const auth = Authenticator.load(fs.readFileSync(file, 'utf8'));
    const r = await command('LoginPasskey', auth.get(await challenge()));
    fs.writeFileSync(file, auth.save());
    const same = r.result === 'success'
        && Buffer.from(r.data.identity).toString('hex')
           === fs.readFileSync(`${file}.identity`, 'utf8');
    console.log(`login: ${r.result}${r.result === 'success'
        ? (same ? ', the same identity' : ', another identity')
        : `: ${r.data}`}`);
}
