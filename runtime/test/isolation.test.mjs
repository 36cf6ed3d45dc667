// Hostile code: each attempt is refused or stopped, and the app (and the
// process) keeps serving.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { encodeCanonical } from '../lib/canonical.mjs';
import { BIN, startRuntime, tree } from './helpers.mjs';

const HOSTILE = {
    'index.js': `
import { runOnHttp } from '@proven-network/handler';

const attempt = (fn) => async () => {
    try {
        const got = await fn();
        return { escaped: true, got: String(got) };
    } catch (e) {
        return { refused: String(e && e.message) };
    }
};

export const ok = runOnHttp({ path: '/ok' }, () => 'still here');

export const globals = runOnHttp({ path: '/globals' }, () => ({
    require: typeof require, process: typeof process,
    module: typeof module, setTimeout: typeof setTimeout,
    fetch: typeof fetch, Buffer: typeof Buffer,
    WebAssembly: typeof WebAssembly, console: typeof console,
    FinalizationRegistry: typeof FinalizationRegistry,
    WeakRef: typeof WeakRef,
}));

// Stack traces: a hook inherited from Function.prototype would be
// handed the host's CallSites; formatting near the stack's end would
// overflow in Node's own code.  There are none: error.stack is undefined.
let hookLeak = 'no';
export const viaStackHook = runOnHttp({ path: '/via-stack-hook' }, () => {
    Function.prototype.prepareStackTrace = (e, trace) => {
        try {
            hookLeak = typeof trace.constructor.constructor(
                'return process')();
        } catch (x) {
            hookLeak = 'ran: ' + x.message;
        }
        return 'hooked';
    };
    const stack = new Error('x').stack;
    Promise.reject(new Error('nobody awaits this'));
    return { stack: typeof stack };
});
export const stackHookResult = runOnHttp({ path: '/stack-hook-result' },
    () => ({ hookLeak }));
export const viaOverflowStack = runOnHttp({ path: '/via-overflow-stack' },
    () => {
        let hostError = null;
        const probe = () => {
            if (hostError !== null) {
                return;
            }
            let e;
            try {
                e = new Error('x');
            } catch (x) {
                return;
            }
            try {
                e.stack;
            } catch (x) {
                hostError = x;
            }
        };
        const dive = () => {
            try {
                dive();
            } catch (e) {
            }
            probe();
        };
        dive();
        if (hostError === null) {
            return { refused: 'no error reached app code' };
        }
        try {
            return { escaped: String(hostError.constructor.constructor(
                'return process')()) };
        } catch (e) {
            return { refused: String(e.message) };
        }
    });
// An error nobody catches, with a hook Node's util.inspect would call
// with host objects
let inspectLeak = 'no';
export const viaInspect = runOnHttp({ path: '/via-inspect' }, () => {
    Promise.reject({
        [Symbol.for('nodejs.util.inspect.custom')](depth, options, inspect) {
            try {
                inspectLeak = typeof inspect.constructor('return process')();
            } catch (e) {
                inspectLeak = 'ran: ' + e.message;
            }
            return 'x';
        },
    });
    return { rejected: true };
});
export const inspectResult = runOnHttp({ path: '/inspect-result' },
    () => ({ inspectLeak }));
export const evalCode = runOnHttp({ path: '/eval' },
    attempt(() => eval('1 + 1')));
export const functionCtor = runOnHttp({ path: '/function' },
    attempt(() => new Function('return process')()));
export const viaRequest = runOnHttp({ path: '/via-request' },
    attempt((req) => ({}).constructor.constructor('return process')()));
export const viaHandler = runOnHttp({ path: '/via-handler' },
    attempt(() => runOnHttp.constructor('return process')()));
export const viaConsole = runOnHttp({ path: '/via-console' },
    attempt(() => console.log.constructor('return process')()));
export const viaError = runOnHttp({ path: '/via-error' }, attempt(() => {
    Error.prepareStackTrace = (e, frames) => frames.map((f) => f.getThis());
    return new Error('x').stack;
}));
export const viaErrorGlobal = runOnHttp({ path: '/via-error-global' },
    attempt(() => {
        globalThis.RangeError = {
            prepareStackTrace: (e, frames) => frames.map((f) => f.getThis()),
        };
        return new RangeError('x').stack;
    }));
export const viaBody = runOnHttp({ path: '/via-body', method: 'POST' },
    (req) => attempt(() => req.body.constructor.constructor(
        'return process')())());
export const viaGlobal = runOnHttp({ path: '/via-global' },
    attempt(() => globalThis.constructor.constructor('return process')()));
export const viaGlobalProto = runOnHttp({ path: '/via-global-proto' },
    attempt(() => Object.getPrototypeOf(globalThis).constructor
        .constructor('return process')()));
export const viaOverflow = runOnHttp({ path: '/via-overflow' }, () => {
    let caught = null;
    const deep = (n) => {
        try {
            if (n > 0) {
                deep(n - 1);
            }
            console.log('x');
        } catch (e) {
            if (caught === null) {
                caught = e;
            }
        }
    };
    const dive = () => {
        try {
            dive();
        } catch (e) {
            console.log('near the limit');
        }
    };
    try {
        dive();
    } catch (e) {
        caught = e;
    }
    deep(10);
    if (caught === null) {
        return { refused: 'no error reached app code' };
    }
    try {
        return { escaped: true,
                 got: String(caught.constructor.constructor('return process')()) };
    } catch (e) {
        return { refused: String(e.message) };
    }
});
export const viaToJSON = runOnHttp({ path: '/via-tojson' }, () => {
    Object.prototype.toJSON = function () { return { kind: 'http' }; };
    return 'set';
});
export const viaProto = runOnHttp({ path: '/via-proto' }, attempt(() => {
    Object.getPrototypeOf(async function () {}).constructor('return 1');
}));
export const processExit = runOnHttp({ path: '/exit' },
    attempt(() => process.exit(1)));
export const spin = runOnHttp({ path: '/spin', timeout: 300 }, () => {
    while (true) {}
});
export const hog = runOnHttp({ path: '/hog', timeout: 20000 }, () => {
    const keep = [];
    for (;;) {
        keep.push(new Array(1024 * 1024).fill(keep.length));
    }
});
`,
};

let rt;

before(async () => {
    rt = await startRuntime(HOSTILE, ['--memory-mb', '64']);
});

after(async () => {
    await rt.stop();
});

async function body(p, extra) {
    const r = await rt.client.http(extra ? 'POST' : 'GET', p, extra);
    assert.equal(r.ok, true, JSON.stringify(r.error));
    return JSON.parse(Buffer.from(r.result.body).toString());
}

async function stillServing() {
    const r = await rt.client.http('GET', '/ok');
    assert.equal(r.ok, true, JSON.stringify(r.error));
    assert.equal(Buffer.from(r.result.body).toString(), 'still here');
}

test('no Node globals in the context', async () => {
    assert.deepEqual(await body('/globals'), {
        require: 'undefined', process: 'undefined', module: 'undefined',
        setTimeout: 'undefined', fetch: 'undefined', Buffer: 'undefined',
        WebAssembly: 'object', console: 'object',
        FinalizationRegistry: 'undefined', WeakRef: 'undefined',
    });
});

test('no stack traces: no hook sees host frames, none overflows in Node',
     async () => {
    assert.deepEqual(await body('/via-stack-hook'), { stack: 'undefined' });
    assert.deepEqual(await body('/stack-hook-result'), { hookLeak: 'no' });
    const o = await body('/via-overflow-stack');
    assert.equal(o.escaped, undefined, JSON.stringify(o));
});

test('an unhandled rejection is dropped unread; the app serves on',
     async () => {
    assert.deepEqual(await body('/via-inspect'), { rejected: true });
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(await body('/inspect-result'), { inspectLeak: 'no' });
    await stillServing();
});

test('eval and Function cannot make code from strings', async () => {
    assert.match((await body('/eval')).refused, /Code generation/);
    assert.match((await body('/function')).refused, /Code generation/);
    assert.match((await body('/via-proto')).refused, /Code generation/);
});

test('constructor chains from our objects stay in the context',
     async () => {
    for (const p of ['/via-request', '/via-handler', '/via-console',
                     '/via-global', '/via-global-proto']) {
        const r = await body(p);
        assert.equal(r.escaped, undefined, `${p}: ${JSON.stringify(r)}`);
        assert.match(r.refused, /Code generation/);
    }
    // an error thrown at the host boundary near the stack's end
    const o = await body('/via-overflow');
    assert.equal(o.escaped, undefined, JSON.stringify(o));
    const b = await body('/via-body', { body: Buffer.from([1, 2, 3]) });
    assert.equal(b.escaped, undefined, JSON.stringify(b));
});

test('Error.prepareStackTrace cannot be set', async () => {
    const r = await body('/via-error');
    assert.equal(r.escaped, undefined, JSON.stringify(r));
    // nor the global binding Node reads it from
    const g = await body('/via-error-global');
    assert.equal(g.escaped, undefined, JSON.stringify(g));
    assert.match(g.refused, /read only/);
});

test('process.exit() is not there', async () => {
    assert.match((await body('/exit')).refused, /process is not defined/);
    await stillServing();
});

test('an endless loop is stopped and a fresh isolate serves the next call',
     async () => {
    const r = await rt.client.http('GET', '/spin');
    assert.equal(r.closed, true);           /* the isolate was terminated */
    const status = await rt.reconnect();
    assert.ok(status.restarts >= 1);
    await stillServing();
    assert.match(rt.stderr(), /held the isolate past its timeout/);
});

test('a call that allocates without end dies alone; the app comes back',
     async () => {
    const r = await rt.client.http('GET', '/hog');
    assert.equal(r.closed, true);
    await rt.reconnect();
    await stillServing();
    assert.equal(rt.child.exitCode, null);
    assert.match(rt.stderr(), /ran out of memory/);
});

test('a package whose manifest lies about its handlers is refused',
     async () => {
    const modules = { 'index.js': 'import { run } from '
                      + '"@proven-network/handler";\n'
                      + 'export const a = run(() => 1);\n' };
    const dir = tree({});
    const file = path.join(dir, 'lying.cbor');
    fs.writeFileSync(file, encodeCanonical({ format: 1, modules,
                                             handlers: [] }));
    const r = spawnSync(process.execPath, ['--experimental-vm-modules',
        '--no-warnings', BIN, 'serve', '--app', 'liar', '--package', file,
        '--listen', path.join(dir, 's.sock')], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /manifest does not list the handlers/);
});
