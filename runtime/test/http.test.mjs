// runOnHttp through the runtime's socket: routing, parameters, bodies,
// answers, and every error code.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { startRuntime } from './helpers.mjs';

const APP = {
    'index.js': `
import { run, runOnHttp, runOnSchedule } from '@proven-network/handler';

export const double = run(({ n }) => {
    console.log('doubling', n);
    return { doubled: n * 2 };
});
export const tick = runOnSchedule('*/5 * * * *', (t) => t.scheduledAt);
export const broken = run(() => { throw new Error('no'); });

export const item = runOnHttp({ path: '/items/:id' }, (req) => ({
    id: req.pathParameters.id, q: req.queryParameters,
    method: req.method, path: req.path,
}));
export const newItem = runOnHttp({ path: '/items/new' }, () => 'the form');
export const create = runOnHttp({ path: '/items', method: 'POST' },
    (req) => ({ status: 201, headers: { 'x-created': 'yes' },
                body: { got: req.body, type: typeof req.body,
                        agent: req.headers['user-agent'] } }));
export const bytes = runOnHttp({ path: '/bytes', method: 'PUT' },
    (req) => req.body.reverse());
export const text = runOnHttp({ path: '/text' }, () => 'plain words');
export const typed = runOnHttp({ path: '/typed' }, () => ({ status: 200,
    headers: { 'content-type': 'text/csv' }, body: 'a,b' }));
export const nothing = runOnHttp({ path: '/nothing' }, () => undefined);
export const later = runOnHttp({ path: '/later' },
    async () => { await null; return { later: true }; });
export const throws = runOnHttp({ path: '/throws' }, () => {
    console.log('about to fail');
    throw new RangeError('out of range here');
});
export const rejects = runOnHttp({ path: '/rejects' },
    async () => { throw 'a string'; });
export const badStatus = runOnHttp({ path: '/bad-status' },
    () => ({ status: 42 }));
export const cyclic = runOnHttp({ path: '/cyclic' },
    () => { const o = {}; o.o = o; return [o]; });
export const slow = runOnHttp({ path: '/slow', timeout: 300 },
    () => new Promise(() => {}));
export const counting = runOnHttp({ path: '/stream/:n' }, (req) => ({
    status: 200, headers: { 'content-type': 'text/plain' },
    body: (async function* () {
        for (let i = 0; i < Number(req.pathParameters.n); i++) {
            yield i % 2 ? new Uint8Array([0x41 + i]) : String(i);
        }
    })(),
}));
export const streamThrows = runOnHttp({ path: '/stream-throws' },
    async function* () { yield 'one'; throw new Error('broke mid-stream'); });
export const streamBad = runOnHttp({ path: '/stream-bad' },
    async function* () { yield 42; });
let cleaned = 'no';
export const streamForever = runOnHttp({ path: '/stream-forever' },
    () => (async function* () {
        try {
            for (;;) { yield 'x'; }
        } finally {
            cleaned = 'yes';
        }
    })());
export const streamCleaned = runOnHttp({ path: '/stream-cleaned' },
    () => ({ cleaned }));
let openGate;
const gate = new Promise((resolve) => { openGate = resolve; });
export const streamTooLate = runOnHttp({ path: '/stream-too-late',
                                         timeout: 50 },
    async () => {
        await gate;
        return (async function* () { yield 'late'; })();
    });
export const release = runOnHttp({ path: '/release' },
    () => { openGate(); return 'released'; });
export const logs = runOnHttp({ path: '/logs' },
    () => { console.log('hello', { n: 1 }); console.error('oops'); return 1; });
`,
};

let rt;

before(async () => {
    rt = await startRuntime(APP, ['--expose-errors']);
});

after(async () => {
    await rt.stop();
});

function header(result, name) {
    const h = result.headers.find(([n]) => n === name);
    return h && h[1];
}

function json(result) {
    return JSON.parse(Buffer.from(result.body).toString());
}

test('path and query parameters reach the handler; JSON comes back',
     async () => {
    // the path arrives decoded (nginx decodes it); the query as sent
    const r = await rt.client.http('GET', '/items/a b?x=1&y=2&y=3');
    assert.equal(r.ok, true);
    assert.equal(r.result.status, 200);
    assert.equal(header(r.result, 'content-type'), 'application/json');
    assert.deepEqual(json(r.result), { id: 'a b', q: { x: '1', y: ['2', '3'] },
                                       method: 'GET', path: '/items/a b' });
});

test('a literal segment beats a parameter', async () => {
    const r = await rt.client.http('GET', '/items/new');
    assert.equal(Buffer.from(r.result.body).toString(), 'the form');
    assert.equal(header(r.result, 'content-type'),
                 'text/plain; charset=utf-8');
});

test('a JSON body arrives as text; status and headers are the handler\'s',
     async () => {
    const r = await rt.client.http('POST', '/items', {
        headers: [['Content-Type', 'application/json'],
                  ['User-Agent', 'tester']],
        body: Buffer.from('{"a":1}'),
    });
    assert.equal(r.result.status, 201);
    assert.equal(header(r.result, 'x-created'), 'yes');
    assert.deepEqual(json(r.result), { got: '{"a":1}', type: 'string',
                                       agent: 'tester' });
});

test('a binary body arrives as bytes and bytes go back', async () => {
    const r = await rt.client.http('PUT', '/bytes', {
        body: Buffer.from([1, 2, 3, 255]) });
    assert.deepEqual([...r.result.body], [255, 3, 2, 1]);
    assert.equal(header(r.result, 'content-type'), 'application/octet-stream');
});

test('the handler\'s content-type wins; no body is an empty one',
     async () => {
    const t = await rt.client.http('GET', '/typed');
    assert.equal(header(t.result, 'content-type'), 'text/csv');
    assert.equal(t.result.headers.length, 1);
    const n = await rt.client.http('GET', '/nothing');
    assert.equal(n.result.status, 200);
    assert.equal(n.result.body.length, 0);
    const l = await rt.client.http('GET', '/later');
    assert.deepEqual(json(l.result), { later: true });
});

test('unknown route: not_found; wrong method: method_not_allowed',
     async () => {
    const r = await rt.client.http('GET', '/nowhere');
    assert.equal(r.ok, false);
    assert.equal(r.error.code, 'not_found');
    const m = await rt.client.http('DELETE', '/items');
    assert.equal(m.error.code, 'method_not_allowed');
    assert.deepEqual(m.error.allow, ['POST']);
    const pct = await rt.client.http('GET', '/items/100%25');
    assert.equal(JSON.parse(Buffer.from(pct.result.body)).id, '100%25');
});

test('a thrown error is handler_error with an id and the message',
     async () => {
    const r = await rt.client.http('GET', '/throws');
    assert.equal(r.error.code, 'handler_error');
    assert.match(r.error.error_id, /^[0-9a-f]{16}$/);
    assert.equal(r.error.message, 'RangeError: out of range here');
    // the thread's stderr reaches the process a moment later
    for (let i = 0; i < 100 && !rt.stderr().includes(r.error.error_id); i++) {
        await new Promise((res) => setTimeout(res, 10));
    }
    assert.ok(rt.stderr().includes(r.error.error_id));
    const s = await rt.client.http('GET', '/rejects');
    assert.equal(s.error.message, 'thrown: a string');
    const b = await rt.client.http('GET', '/bad-status');
    assert.match(b.error.message, /status 42 is not an HTTP status/);
    const c = await rt.client.http('GET', '/cyclic');
    assert.match(c.error.message, /circular/);
});

test('a handler past its timeout: timeout, and the app keeps serving',
     async () => {
    const r = await rt.client.http('GET', '/slow');
    assert.equal(r.error.code, 'timeout');
    const next = await rt.client.http('GET', '/text');
    assert.equal(Buffer.from(next.result.body).toString(), 'plain words');
});

test('a streamed body: head with a stream number, chunks by app.next',
     async () => {
    const head = await rt.client.http('GET', '/stream/4');
    assert.equal(head.result.status, 200);
    assert.equal(header(head.result, 'content-type'), 'text/plain');
    assert.equal(head.result.body.length, 0);
    const stream = head.result.stream;
    assert.ok(Number.isInteger(stream));
    const got = [];
    for (;;) {
        const r = await rt.client.call('app.next', { stream });
        if (!r.result.more) {
            assert.equal(r.result.chunk.length, 0);
            break;
        }
        got.push(Buffer.from(r.result.chunk).toString());
    }
    assert.deepEqual(got, ['0', 'B', '2', 'D']);
    const over = await rt.client.call('app.next', { stream });
    assert.equal(over.error.code, 'not_found');
});

test('a stream that throws or yields a non-chunk fails that pull',
     async () => {
    // an async generator function is itself the handler: its generator is
    // the body
    const a = await rt.client.http('GET', '/stream-throws');
    const one = await rt.client.call('app.next', { stream: a.result.stream });
    assert.equal(Buffer.from(one.result.chunk).toString(), 'one');
    const broke = await rt.client.call('app.next',
                                       { stream: a.result.stream });
    assert.equal(broke.error.code, 'handler_error');
    assert.match(broke.error.message, /broke mid-stream/);

    const b = await rt.client.http('GET', '/stream-bad');
    const bad = await rt.client.call('app.next', { stream: b.result.stream });
    assert.match(bad.error.message, /a streamed chunk is a string or a/);
    assert.equal((await rt.client.call('app.next',
        { stream: 12345 })).error.code, 'not_found');
});

test('a stream given up (app.cancel, or 30 s unread) runs its cleanup',
     async () => {
    const h = await rt.client.http('GET', '/stream-forever');
    const x = await rt.client.call('app.next', { stream: h.result.stream });
    assert.equal(Buffer.from(x.result.chunk).toString(), 'x');
    const cleaned = async () => json(
        (await rt.client.http('GET', '/stream-cleaned')).result);
    assert.deepEqual(await cleaned(), { cleaned: 'no' });
    const c = await rt.client.call('app.cancel', { stream: h.result.stream });
    assert.equal(c.ok, true);
    assert.deepEqual(await cleaned(), { cleaned: 'yes' });
    assert.equal((await rt.client.call('app.next',
        { stream: h.result.stream })).error.code, 'not_found');
});

test('streams of calls that timed out are dropped, not kept open',
     async () => {
    // more than the 256 streams a worker keeps open at once
    const late = [];
    for (let i = 0; i < 300; i++) {
        late.push(rt.client.http('GET', '/stream-too-late'));
    }
    for (const r of await Promise.all(late)) {
        assert.equal(r.error.code, 'timeout');
    }
    await rt.client.http('GET', '/release');
    await new Promise((r) => setTimeout(r, 100));
    const head = await rt.client.http('GET', '/stream/1');
    assert.equal(head.error, undefined, JSON.stringify(head.error));
    await rt.client.call('app.cancel', { stream: head.result.stream });
});

test('console lines are kept per app, bounded', async () => {
    await rt.client.http('GET', '/logs');
    const r = await rt.client.call('app.logs');
    const lines = r.result.lines.map(([, level, line]) => `${level} ${line}`);
    assert.ok(lines.includes('log hello {"n":1}'));
    assert.ok(lines.includes('error oops'));
    assert.ok(lines.includes('log about to fail'));
});

test('malformed requests get bad_request or unknown_op', async () => {
    const r = await rt.client.call('app.http', { method: 'GET' });
    assert.equal(r.error.code, 'bad_request');
    const h = await rt.client.call('app.http', { method: 'GET', path: '/text',
                                                 headers: [[1, 2]] });
    assert.equal(h.error.code, 'bad_request');
    const u = await rt.client.call('app.nope');
    assert.equal(u.error.code, 'unknown_op');
});

test('app.run runs a run or schedule handler by name with its result',
     async () => {
    const r = await rt.client.call('app.run', { handler: 'index.js#double',
                                                args: { n: 21 } });
    assert.equal(r.ok, true, JSON.stringify(r.error));
    assert.deepEqual(r.result.output, { doubled: 42 });
    assert.deepEqual(r.result.logs, [{ level: 'log', line: 'doubling 21' }]);
    assert.ok(r.result.duration_us >= 0);

    const t = await rt.client.call('app.run', { handler: 'index.js#tick',
                                                args: { scheduledAt: 60000 },
                                                trigger: 'schedule' });
    assert.deepEqual(t.result.output, 60000);
    /* without its trigger (a caller's Execute): not runnable */
    const n = await rt.client.call('app.run', { handler: 'index.js#tick',
                                                args: { scheduledAt: 1 } });
    assert.equal(n.error.code, 'not_found');
    assert.match(n.error.message, /a schedule handler: run by its trigger/);

    const h = await rt.client.call('app.run', { handler: 'index.js#text' });
    assert.equal(h.error.code, 'not_found');
    const e = await rt.client.call('app.run', { handler: 'index.js#broken' });
    assert.equal(e.error.code, 'handler_error');
    assert.equal(e.error.message, 'Error: no');
});
