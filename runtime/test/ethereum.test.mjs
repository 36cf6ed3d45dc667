// runOnEthereumEvent: the filter a package declares (its manifest entry,
// what provend follows), bad filters refused at pack, and the event's
// arguments decoded from the log provend hands over.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { pack } from '../lib/package.mjs';
import { startRuntime, tree } from './helpers.mjs';

const NFT = '0x' + 'ab'.repeat(20);
const APP = {
    'index.js': `
import { runOnEthereumEvent } from '@proven-network/handler';

export const moved = runOnEthereumEvent({
    address: '${NFT.toUpperCase().replace('0X', '0x')}', confirmations: 2,
    chain: 'sepolia',
    event: 'Transfer(address indexed from, address indexed to, '
           + 'uint256 indexed tokenId)',
}, (e) => ({ event: e.event, from: e.args.from, to: e.args.to,
             tokenId: String(e.args.tokenId), block: e.blockNumber }));

export const said = runOnEthereumEvent({
    address: '${NFT}', topics: [null, '0x${'00'.repeat(31)}07'],
    event: 'Said(int8 indexed mood, string text, bool loud, bytes2 tag)',
}, (e) => (e.args === null ? { argsError: e.argsError }
            : { mood: String(e.args.mood), text: e.args.text,
                loud: e.args.loud, tag: e.args.tag }));

export const raw = runOnEthereumEvent({ address: '${NFT}' }, (e) => e);
`,
};

const word = (hex) => hex.replace(/^0x/, '').padStart(64, '0');

let rt;
before(async () => { rt = await startRuntime(APP); });
after(async () => { await rt.stop(); });

test('the manifest holds the filter provend follows', async () => {
    const { package: pkg } = await pack(tree(APP));
    const byName = Object.fromEntries(pkg.handlers.map((h) => [h.name, h]));
    assert.deepEqual(byName.moved, {
        module: 'index.js', name: 'moved', kind: 'ethereum', address: NFT,
        topics: [], confirmations: 2, chain: 11155111,
        event: 'Transfer(address,address,uint256)' });
    assert.deepEqual(byName.said.topics, [null, '0x' + '00'.repeat(31) + '07']);
    assert.equal(byName.said.event, 'Said(int8,string,bool,bytes2)');
    assert.equal(byName.raw.confirmations, 12);
    assert.equal(byName.raw.event, undefined);
});

test('bad filters are refused at pack, saying what is wrong', async () => {
    const bad = async (opts, pattern) => {
        await assert.rejects(pack(tree({ 'index.js':
            "import { runOnEthereumEvent } from '@proven-network/handler';\n"
            + `export const h = runOnEthereumEvent(${opts}, () => 1);` })),
            pattern);
    };
    await bad('{}', /address must be a contract's, 0x and 40 hex digits/);
    await bad(`{ address: '${NFT}', confirmations: 129 }`,
              /confirmations must be a whole number, 0 to 128/);
    await bad(`{ address: '${NFT}', topics: ['0x12'] }`,
              /each topic must be null \(any\) or 0x and 64 hex digits/);
    await bad(`{ address: '${NFT}', topics: [null, null, null, null, null] }`,
              /topics must be a list of 4 at most/);
    await bad(`{ address: '${NFT}', chain: 'mars' }`,
              /chain must be a chain id or one of ethereum/);
    await bad(`{ address: '${NFT}', event: 'Transfer(address from' }`,
              /event must be a signature like/);
    await bad(`{ address: '${NFT}', event: 'T(uint7 a)' }`,
              /parameter "uint7 a" is not a type/);
    await bad(`{ address: '${NFT}', event: 'T(uint indexed a, uint indexed b,`
              + ` uint indexed c, uint indexed d)' }`,
              /more than 3 indexed parameters/);
    await bad(`{ address: '${NFT}', event: 'T()', topics: ['0x${'11'.repeat(32)}'] }`,
              /with an event, its topic is the first: give null there/);
});

test('the event arrives with its arguments decoded', async () => {
    const ev = {
        blockNumber: 9, blockHash: '0x' + '01'.repeat(32), logIndex: 3,
        transactionHash: '0x' + '02'.repeat(32), address: NFT, data: '0x',
        topics: ['0x' + '03'.repeat(32), '0x' + word('0x' + '0a'.repeat(20)),
                 '0x' + word('0x' + '0b'.repeat(20)),
                 '0x' + word('0x1234')],
    };
    const r = await rt.client.call('app.run', { handler: 'index.js#moved',
                                                args: [ev], spread: true,
                                                trigger: 'ethereum' });
    assert.equal(r.ok, true, JSON.stringify(r.error));
    assert.deepEqual(r.result.output, { event: 'Transfer',
        from: '0x' + '0a'.repeat(20), to: '0x' + '0b'.repeat(20),
        tokenId: String(0x1234), block: 9 });

    /* int8 -2 indexed; string at offset 0x60, bool, bytes2 */
    const text = Buffer.from('héllo').toString('hex');
    const said = { ...ev, topics: [ev.topics[0], '0x' + 'f'.repeat(62) + 'fe'],
        data: '0x' + word('0x60') + word('0x1') + 'cafe'.padEnd(64, '0')
              + word('0x' + (text.length / 2).toString(16))
              + text.padEnd(64, '0') };
    const s = await rt.client.call('app.run', { handler: 'index.js#said',
                                                args: [said], spread: true,
                                                trigger: 'ethereum' });
    assert.equal(s.ok, true, JSON.stringify(s.error));
    assert.deepEqual(s.result.output, { mood: '-2', text: 'héllo',
                                        loud: true, tag: '0xcafe' });

    /* data too short, or topics missing, for what the signature says:
     * the handler still runs, told so (a throw would hold its filter) */
    const short = { ...said, data: '0x' + word('0x60') };
    const f = await rt.client.call('app.run', { handler: 'index.js#said',
                                                args: [short], spread: true,
                                                trigger: 'ethereum' });
    assert.deepEqual(f.result.output, { argsError: 'the log does not decode '
        + 'as Said(int8,string,bool,bytes2)' });
    const far = { ...said, data: '0x' + word('0xffffffffff') + word('0x1')
                  + word('0x0') };
    const g = await rt.client.call('app.run', { handler: 'index.js#said',
                                                args: [far], spread: true,
                                                trigger: 'ethereum' });
    assert.equal(g.result.output.argsError.length > 0, true);
    const bare = { ...said, topics: [said.topics[0]] };
    const b = await rt.client.call('app.run', { handler: 'index.js#said',
                                                args: [bare], spread: true,
                                                trigger: 'ethereum' });
    assert.equal(b.result.output.argsError.length > 0, true);

    /* a caller's Execute (no trigger) cannot hand it an event */
    const x = await rt.client.call('app.run', { handler: 'index.js#moved',
                                                args: [ev], spread: true });
    assert.equal(x.error.code, 'not_found');
    assert.match(x.error.message, /is an ethereum handler: run by its trigger/);

    /* no signature: the log as provend gave it */
    const w = await rt.client.call('app.run', { handler: 'index.js#raw',
                                                args: [ev], spread: true,
                                                trigger: 'ethereum' });
    assert.deepEqual(w.result.output, ev);
});
