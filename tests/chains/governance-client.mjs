// A client that takes its expected PCRs from the governance contract (the
// SDK's governanceMeasurements, read from ganache directly, never through
// the node) and opens a session with a node: one line per step, for
// tests/governance.sh to match.
//   node tests/chains/governance-client.mjs CHAIN_URL CONTRACT NODE_URL ROOT
//        [REMOVED_PCRS_FILE]
// With REMOVED_PCRS_FILE, a session expecting only those PCRs is tried too.
import fs from 'node:fs';

import { governanceMeasurements, Session } from '../../sdk/src/index.mjs';

const [chain, contract, node, root, removed] = process.argv.slice(2);
const rootPem = fs.readFileSync(root, 'utf8');
console.warn = () => {};        /* the dev provider's warning */

const sets = await governanceMeasurements(chain, contract);
console.log(`measurements: ${sets.map((s) => `v${s.version}`).join(' ')}`);
try {
    const s = await Session.open(node, { root: rootPem, pcrs: sets });
    console.log(`session: ${(await s.whoAmI()).result}`);
} catch (e) {
    console.log(`session refused: ${e.message}`);
}
if (removed) {
    const p = fs.readFileSync(removed).toString('hex');
    const only = [{ 0: p.slice(0, 96), 1: p.slice(96, 192),
                    2: p.slice(192) }];
    try {
        await Session.open(node, { root: rootPem, pcrs: only });
        console.log('removed measurement: a session');
    } catch (e) {
        console.log(`removed measurement: refused: ${e.message}`);
    }
}
