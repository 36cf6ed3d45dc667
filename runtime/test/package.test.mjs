// Packing: ids are stable, the manifest is what the code declares, and
// bad packages are refused with a reason.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { encode } from 'cborg';

import { encodeCanonical } from '../lib/canonical.mjs';
import { decodePackage, pack, PackageError, packageId }
    from '../lib/package.mjs';
import { tree } from './helpers.mjs';

const APP = {
    'index.js': `import { runOnHttp, run } from '@proven-network/handler';
import { label } from './lib/label.js';
export const show = runOnHttp({ path: '/items/:id', timeout: 2000 },
    (req) => label(req.pathParameters.id));
export const add = runOnHttp({ path: '/items', method: 'POST' }, () => 1);
export const rpc = run(() => 2);
export const plain = 7;
`,
    'lib/label.js': 'export const label = (id) => `item ${id}`;\n',
    'README.md': 'not a module',
};

test('canonical CBOR orders keys by their encoding and uses short heads',
     () => {
    const bytes = encodeCanonical({ bb: 1, a: [true, null, -2, 'x'],
                                    c: new Uint8Array([1, 2]), n: 300 });
    assert.equal(Buffer.from(bytes).toString('hex'),
                 'a4' + '61' + '61' + '84f5f62161' + '78'
                 + '61' + '63' + '420102'
                 + '61' + '6e' + '19012c'
                 + '62' + '6262' + '01');
    assert.throws(() => encodeCanonical({ f: 1.5 }), /safe integers/);
});

test('the same sources give the same id, another source another id',
     async () => {
    const a = await pack(tree(APP));
    const b = await pack(tree(APP));
    assert.equal(a.id, b.id);
    assert.equal(a.id, packageId(a.bytes));
    assert.match(a.id, /^[0-9a-f]{64}$/);

    const c = await pack(tree({ ...APP, 'lib/label.js':
                                'export const label = (id) => id;\n' }));
    assert.notEqual(a.id, c.id);
});

test('the manifest lists the exported handlers, not other exports',
     async () => {
    const { package: pkg } = await pack(tree(APP));
    assert.deepEqual(Object.keys(pkg.modules).sort(),
                     ['index.js', 'lib/label.js']);
    assert.deepEqual(pkg.handlers, [
        { module: 'index.js', name: 'add', kind: 'http', method: 'POST',
          path: '/items' },
        { module: 'index.js', name: 'rpc', kind: 'rpc' },
        { module: 'index.js', name: 'show', kind: 'http', method: 'GET',
          path: '/items/:id', timeout: 2000 },
    ]);
});

test('a package decodes back; altered or non-canonical bytes are refused',
     async () => {
    const { bytes } = await pack(tree(APP));
    assert.equal(decodePackage(bytes).format, 1);

    const longer = Buffer.concat([Buffer.from(bytes), Buffer.from([0])]);
    assert.throws(() => decodePackage(longer), PackageError);

    // the same package with its keys in another order: valid, not ours
    const pkg = decodePackage(bytes);
    const reordered = encode({ modules: pkg.modules, handlers: pkg.handlers,
                               format: 1 },
                             { mapSorter: (a, b) => (a[0].value
                                                     > b[0].value ? -1 : 1) });
    assert.throws(() => decodePackage(reordered), /not in canonical form/);
    assert.throws(() => decodePackage(Buffer.from(
        encodeCanonical({ format: 1 }))), /not a format 1 package/);
    assert.throws(() => decodePackage(Buffer.from([0x62, 0x61])), /not CBOR/);
});

test('imports outside the package or of Node are refused at pack',
     async () => {
    await assert.rejects(pack(tree({ 'index.js':
        'import fs from "fs"; export const x = 1;' })),
        /only relative imports inside the package/);
    await assert.rejects(pack(tree({ 'index.js':
        'import cp from "node:child_process"; export const x = 1;' })),
        /only relative imports/);
    await assert.rejects(pack(tree({ 'index.js':
        'import { y } from "./missing.js"; export const x = y;' })),
        /missing\.js is not in the package/);
    await assert.rejects(pack(tree({ 'index.js':
        'import { a } from "@proven-network/nothing"; export const x = a;' })),
        /no such Proven module/);
});

test('import() and import.meta are refused at pack, words in strings not',
     async () => {
    await assert.rejects(pack(tree({ 'index.js':
        'export const x = 1;\nexport const y = () => import("node:fs");' })),
        /index\.js:2: import\(\) is not available to apps/);
    await assert.rejects(pack(tree({ 'lib/a.js':
        'export const here = import.meta.url;' })),
        /lib\/a\.js:1: import\.meta is not available to apps/);
    await pack(tree({ 'index.js':
        '// import("x") in a comment\nexport const s = "import(y) import.meta";' }));
});

test('bad handler options are refused with the reason', async () => {
    const bad = async (code) => pack(tree({ 'index.js':
        `import * as h from '@proven-network/handler';\n${code}` }));
    await assert.rejects(bad('export const x = h.runOnHttp({ path: "items" }, '
                             + '() => 1);'), /path must be like/);
    await assert.rejects(bad('export const x = h.runOnHttp({ path: "/a", '
                             + 'method: "BREW" }, () => 1);'),
                         /method must be one of/);
    await assert.rejects(bad('export const x = h.runOnSchedule("61 * * * *", '
                             + '() => 1);'), /not valid for the range 0-59/);
    await assert.rejects(bad('export const x = h.runOnSchedule("* * *", '
                             + '() => 1);'), /not five cron fields/);
    await assert.rejects(bad('export const x = h.runWithOptions({ timeout: '
                             + '-1 }, () => 1);'), /timeout must be/);
    await assert.rejects(bad('export const x = h.run(5);'),
                         /must be a function/);
});

test('a module that never finishes loading is stopped', async () => {
    await assert.rejects(pack(tree({ 'index.js': 'while (true) {}' }),
                              { loadTimeoutMs: 500 }),
                         /took over 500 ms/);
});

test('the hand-written app.http answer is the generic encoding', async () => {
    const { encodeFrame, encodeHttpAnswer } = await import('../lib/frames.mjs');
    const cases = [
        [1, 200, [], Buffer.alloc(0)],
        [70000, 404, [['content-type', 'application/json'], ['x-ünï', 'v']],
         Buffer.from('{"a":1}')],
        [4294967295, 599, Array.from({ length: 30 }, (_, i) => [`h${i}`,
                                                              'x'.repeat(300)]),
         Buffer.alloc(70000, 7)],
    ];
    for (const [id, status, headers, body] of cases) {
        assert.deepEqual(encodeHttpAnswer(id, status, headers, body),
                         encodeFrame({ id, ok: true,
                                       result: { status, headers, body } }));
    }
});
