// runOnRadixEvent: the filter a package declares (what provend follows
// through its Gateway), bad filters refused at pack, and the event run
// by provend's trigger only.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { pack } from '../lib/package.mjs';
import { startRuntime, tree } from './helpers.mjs';

const COMPONENT = 'component_rdx1cptxxxxxxxxxfaucetxxxxxxxxx000527798379xxxxxxxxxfaucet';
const APP = {
    'index.js': `
import { runOnRadixEvent } from '@proven-network/handler';

export const minted = runOnRadixEvent({
    emitter: '${COMPONENT}', eventName: 'MintedEvent',
}, (e) => ({ version: e.stateVersion, name: e.eventName,
             fields: e.data.fields.length }));
`,
};

let rt;
before(async () => { rt = await startRuntime(APP); });
after(async () => { await rt.stop(); });

test('the manifest holds the filter provend follows', async () => {
    const { package: pkg } = await pack(tree(APP));
    assert.deepEqual(pkg.handlers, [{ module: 'index.js', name: 'minted',
        kind: 'radix', emitter: COMPONENT, event: 'MintedEvent' }]);
});

test('bad filters are refused at pack, saying what is wrong', async () => {
    const bad = async (opts, pattern) => {
        await assert.rejects(pack(tree({ 'index.js':
            "import { runOnRadixEvent } from '@proven-network/handler';\n"
            + `export const h = runOnRadixEvent(${opts}, () => 1);` })),
            pattern);
    };
    await bad('{ eventName: "E" }', /emitter must be an address \(Bech32m/);
    await bad(`{ emitter: 'Component_rdx1qqqqqq', eventName: 'E' }`,
              /emitter must be an address/);
    await bad(`{ emitter: '${COMPONENT}' }`, /eventName must be an event's name/);
    await bad(`{ emitter: '${COMPONENT}', eventName: 'a b' }`,
              /eventName must be an event's name/);
    await bad(`{ emitter: '${COMPONENT}', eventName: '${'E'.repeat(129)}' }`,
              /eventName must be an event's name/);
});

test('the event runs by provend\'s trigger only', async () => {
    const ev = { stateVersion: 12, intentHash: 'txid_rdx1x', emitter: COMPONENT,
                 eventName: 'MintedEvent', eventIndex: 2, timestamp: null,
                 data: { kind: 'Tuple', fields: [{ kind: 'U8', value: '1' }] } };
    const r = await rt.client.call('app.run', { handler: 'index.js#minted',
                                                args: [ev], spread: true,
                                                trigger: 'radix' });
    assert.equal(r.ok, true, JSON.stringify(r.error));
    assert.deepEqual(r.result.output, { version: 12, name: 'MintedEvent',
                                        fields: 1 });
    /* a caller's Execute (no trigger), or another chain's trigger */
    for (const trigger of [undefined, 'ethereum']) {
        const x = await rt.client.call('app.run', { handler: 'index.js#minted',
                                                    args: [ev], spread: true,
                                                    trigger });
        assert.equal(x.error.code, 'not_found');
        assert.match(x.error.message, /is a radix handler: run by its trigger/);
    }
});
