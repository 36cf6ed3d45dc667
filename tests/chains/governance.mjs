// The governance contract (contracts/Governance.sol) on the ganache of
// tests/chains/ganache.mjs, for tests/governance.sh:
//   deploy INFO THRESHOLD OWNER...   deploys it (by ganache's first
//                                     account); INFO (JSON): its address,
//                                     methods
//   allow INFO FROM PCRS VERSION     FROM proposes to allow the measurement
//                                     of PCRS (a --pcrs-file: 3 x 48
//                                     bytes); prints the proposal's id
//   remove INFO FROM PCRS            FROM proposes to remove it; prints id
//   remove-owner INFO FROM OWNER     FROM proposes to remove OWNER
//   approve INFO FROM ID             FROM approves proposal ID
//   measurements INFO                prints measurements() as JSON lines
//                                     {pcr0, pcr1, pcr2, version}
//   hash PCRS                        prints the measurement's hash
// Usage: node tests/chains/governance.mjs PORT COMMAND ARGS...
import fs from 'node:fs';

import { rpcAt } from './rpc.mjs';
import { compile } from './solc.mjs';

const [port, command, ...args] = process.argv.slice(2);
const rpc = rpcAt(port);

/* ---- the little of the ABI needed: words, bytes, arrays ---- */
const word = (v) => BigInt(v).toString(16).padStart(64, '0');
function bytesTail(hex) {
    const h = hex.replace(/^0x/, '');
    return word(h.length / 2) + h.padEnd(Math.ceil(h.length / 64) * 64, '0');
}
/* heads and tails: each argument {word} or {bytes: hex} */
function encode(values) {
    let head = '', tail = '';
    const headLen = values.length * 32;
    for (const v of values) {
        if (v.bytes !== undefined) {
            head += word(headLen + tail.length / 2);
            tail += bytesTail(v.bytes);
        } else if (v.words !== undefined) {
            head += word(headLen + tail.length / 2);
            tail += word(v.words.length) + v.words.map(word).join('');
        } else {
            head += word(v.word);
        }
    }
    return head + tail;
}
function decodeBytesArray(hex, at) {
    const w = (i) => BigInt('0x' + hex.slice(i * 2, i * 2 + 64));
    const n = Number(w(at));
    const out = [];
    for (let i = 0; i < n; i++) {
        const off = at + 32 + Number(w(at + 32 + 32 * i));
        const len = Number(w(off));
        out.push(hex.slice((off + 32) * 2, (off + 32 + len) * 2));
    }
    return out;
}

const info = () => JSON.parse(fs.readFileSync(args[0], 'utf8'));
const pcrs = (file) => fs.readFileSync(file).toString('hex');
const call = (method, values) => '0x' + info().methods[method]
    + encode(values);
async function mined(tx) {
    const r = await rpc('eth_getTransactionReceipt', [tx]);
    if (r.status !== '0x1') {
        throw new Error(`the transaction failed: ${JSON.stringify(r)}`);
    }
    return r;
}
async function send(from, data) {
    return mined(await rpc('eth_sendTransaction', [{
        from, to: info().address, data, gas: '0x500000' }]));
}
/* the id of the proposal a receipt's Proposed event names */
function proposed(receipt) {
    const [log] = receipt.logs.filter((l) => l.topics.length === 2);
    return BigInt(log.topics[1]).toString();
}

const accounts = await rpc('eth_accounts');
if (command === 'deploy') {
    const [file, threshold, ...owners] = args;
    const { bytecode, methods } = compile('Governance');
    const tx = await rpc('eth_sendTransaction', [{
        from: accounts[0], gas: '0x800000',
        data: '0x' + bytecode + encode([{ words: owners },
                                        { word: threshold }]) }]);
    const { contractAddress } = await mined(tx);
    fs.writeFileSync(file, JSON.stringify({ address: contractAddress,
                                            methods }));
    console.log(contractAddress);
} else if (command === 'allow') {
    const p = pcrs(args[2]);
    console.log(proposed(await send(args[1], call(
        'proposeAllow(bytes,bytes,bytes,uint64)',
        [{ bytes: p.slice(0, 96) }, { bytes: p.slice(96, 192) },
         { bytes: p.slice(192, 288) }, { word: args[3] }]))));
} else if (command === 'remove') {
    const hash = await rpc('web3_sha3', ['0x' + pcrs(args[2])]);
    console.log(proposed(await send(args[1], call('proposeRemove(bytes32)',
                                                  [{ word: hash }]))));
} else if (command === 'remove-owner') {
    console.log(proposed(await send(args[1], call('proposeRemoveOwner(address)',
                                                  [{ word: args[2] }]))));
} else if (command === 'approve') {
    await send(args[1], call('approve(uint256)', [{ word: args[2] }]));
} else if (command === 'measurements') {
    const r = (await rpc('eth_call', [{ to: info().address,
                                        data: call('measurements()', []) },
                                      'latest'])).slice(2);
    const at = (i) => Number(BigInt('0x' + r.slice(i * 64, i * 64 + 64)));
    const [p0, p1, p2] = [0, 1, 2].map((i) => decodeBytesArray(r, at(i)));
    const versionsAt = at(3);
    p0.forEach((_, i) => console.log(JSON.stringify({
        pcr0: p0[i], pcr1: p1[i], pcr2: p2[i],
        version: Number(BigInt('0x' + r.slice((versionsAt + 32 + 32 * i) * 2,
                                              (versionsAt + 64 + 32 * i) * 2)))
    })));
} else if (command === 'hash') {
    console.log(await rpc('web3_sha3', ['0x' + pcrs(args[0])]));
} else {
    console.error(`unknown command ${command}`);
    process.exit(2);
}
