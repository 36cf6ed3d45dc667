// bench/radix's peer: Radix's own @radixdlt/rola (tests/radix's install)
// checking the proofs rola.c made, its Gateway read answered at once
// ("no owner keys"), so that what is timed is the same work: the hash,
// the signature, the virtual account derived (by the engine toolkit).
// Prints one JSON line.
//   node peer.mjs FILE SECONDS

import fs from 'node:fs';
import { createRequire } from 'node:module';

const here = new URL('.', import.meta.url).pathname;
const require = createRequire(here + '../../tests/radix/package.json');
const { Rola } = await import(require.resolve('@radixdlt/rola'));

const [file, seconds] = process.argv.slice(2);
const proofs = JSON.parse(fs.readFileSync(file, 'utf8'));
const rola = Rola({
    expectedOrigin: 'https://dapp.example',
    dAppDefinitionAddress: 'account_rdx12xsvygvltz4uhsht6tdrfxktzpmnl77r0d40j8agmujgdj022sudkk',
    networkId: 1, applicationName: 'bench',
    gatewayApiClient: { state: { getEntityDetailsVaultAggregated:
        async () => ({ metadata: { items: [] } }) } } });

let n = 0;
const start = process.hrtime.bigint();
const elapsed = () => Number(process.hrtime.bigint() - start) / 1e9;
do {
    for (let i = 0; i < 64; i++, n++) {
        const p = proofs[n % proofs.length];
        const r = await rola.verifySignedChallenge({
            address: p.account, type: 'account', challenge: p.challenge,
            proof: { publicKey: p.public_key, signature: p.signature,
                     curve: 'curve25519' } });
        if (r.isErr()) {
            throw new Error(`a good proof refused: ${JSON.stringify(r.error)}`);
        }
    }
} while (elapsed() < +seconds);
console.log(JSON.stringify({ checks_per_s: Math.round(n / elapsed()) }));
