// bench/chains' peer: the work of proofs.c with EthereumJS (@ethereumjs/
// trie 6.2.1, the trie of the EthereumJS VM under Hardhat's node, and
// @ethereumjs/rlp): the same fixtures, the same hex JSON in.  Prints one
// JSON line.
//   node peer.mjs FIXTURES_DIR SECONDS
import fs from 'node:fs';

import { RLP } from '@ethereumjs/rlp';
import { Trie } from '@ethereumjs/trie';

const [dir, secondsText] = process.argv.slice(2);
const seconds = Number(secondsText);
const proofsFixture = JSON.parse(fs.readFileSync(
    `${dir}/eth/ganache-proofs.json`, 'utf8'));
const receiptsFixture = JSON.parse(fs.readFileSync(
    `${dir}/eth/ganache-receipts.json`, 'utf8'));

const bytes = (hex) => Uint8Array.from(Buffer.from(hex.slice(2), 'hex'));
/* a quantity as RLP wants it: big-endian, no leading zeros */
const quantity = (hex) => {
    const h = hex.slice(2).replace(/^0+/, '');
    return Uint8Array.from(Buffer.from(h.length % 2 ? '0' + h : h, 'hex'));
};
const equal = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

const root = bytes(proofsFixture.stateRoot);
let proofs = 0;
let start = performance.now();
do {
    for (const p of proofsFixture.proofs.slice(0, 2)) {
        const account = await Trie.verifyProof(bytes(p.address),
            p.accountProof.map(bytes), { root, useKeyHashing: true });
        if (account === null) {
            throw new Error('an account proof does not hold');
        }
        const storageRoot = RLP.decode(account)[2];
        proofs++;
        for (const sp of p.storageProof) {
            await Trie.verifyProof(bytes(sp.key), sp.proof.map(bytes),
                                   { root: storageRoot, useKeyHashing: true });
            proofs++;
        }
    }
} while (performance.now() - start < seconds * 1000);
const proofsPerS = proofs / ((performance.now() - start) / 1000);

/* a receipt as consensus encodes it: type byte, RLP [status, gas, bloom,
   logs of [address, topics, data]] */
function receipt(r) {
    const body = RLP.encode([
        quantity(r.status), quantity(r.cumulativeGasUsed),
        bytes(r.logsBloom),
        r.logs.map((l) => [bytes(l.address), l.topics.map(bytes),
                           bytes(l.data)])]);
    const type = parseInt(r.type, 16);
    return type === 0 ? body : Uint8Array.from([type, ...body]);
}

const block = receiptsFixture.blocks[1];
const want = bytes(block.header.receiptsRoot);
let blocks = 0;
start = performance.now();
do {
    const trie = new Trie();
    for (let i = 0; i < block.receipts.length; i++) {
        await trie.put(RLP.encode(i), receipt(block.receipts[i]));
    }
    if (!equal(trie.root(), want)) {
        throw new Error('the receipts root differs');
    }
    blocks++;
} while (performance.now() - start < seconds * 1000);
const blocksPerS = blocks / ((performance.now() - start) / 1000);

console.log(JSON.stringify({ proofs_per_s: Math.round(proofsPerS),
                             blocks_per_s: Math.round(blocksPerS * 10) / 10,
                             receipts: block.receipts.length }));
