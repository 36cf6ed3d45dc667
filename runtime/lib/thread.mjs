// A worker thread holding one application version's sandbox, in an isolate
// of its own: its heap limit (resourceLimits) stops a call that allocates
// without end, and the supervising thread can terminate it when a call
// holds it past its deadline, while the process goes on.  In serve mode
// the thread also answers the app's socket itself, so a request never
// crosses between threads.

import { types } from 'node:util';
import { parentPort, workerData } from 'node:worker_threads';

import { caller } from './caller.mjs';
import { Executor } from './executor.mjs';
import { sameHandlers } from './package.mjs';
import { Sandbox } from './sandbox.mjs';
import { RuntimeServer } from './server.mjs';

const BEAT_MS = 10;

/*
 * What app code throws or rejects outside a call (a promise nobody
 * awaited) ends here.  Node's default would format it with util.inspect,
 * which calls hooks the value may carry (Symbol.for(
 * 'nodejs.util.inspect.custom')) with host objects: a value that is not
 * one of this realm's errors is never looked at.
 */
const HOST_ERRORS = new Set([Error, TypeError, RangeError, SyntaxError,
    ReferenceError, EvalError, URIError, AggregateError]
    .map((E) => E.prototype));

function dropped(e) {
    /* no instanceof: it would run a Proxy's traps */
    const ours = types.isNativeError(e)
        && HOST_ERRORS.has(Object.getPrototypeOf(e));
    process.stderr.write(`proven-runtime: app ${workerData.app}: ${ours
        ? e.stack : 'an exception outside any call was dropped'}\n`);
}
process.on('uncaughtException', dropped);
process.on('unhandledRejection', dropped);

const shared = new Float64Array(workerData.shared);
let executor = null;

const sandbox = new Sandbox(workerData.modules, {
    settle(id, result) {
        return executor.settle(id, result);
    },
    storage(id, request) {
        /* from the call's context, never from what app code sent */
        delete request.caller;
        const who = caller.getStore();
        if (who) {
            request.caller = who;
        }
        parentPort.postMessage({ type: 'storage', id, request });
    },
}, { name: workerData.app, timeoutMax: workerData.timeoutMax });
executor = new Executor(sandbox, shared);

let server = null;
let draining = false;   /* told to drain while loading: never listen */

parentPort.on('message', async (m) => {
    if (m.type === 'storage_result') {
        sandbox.resume(m.id, m.ok, m.ok ? m.result : m.error);
    } else if (m.type === 'drain') {
        draining = true;
        if (server !== null) {
            await server.drain(m.ms);
        }
        parentPort.postMessage({ type: 'drained' });
    }
});

/* the heartbeat stops while a call holds the thread */
shared[0] = Date.now();
setInterval(() => {
    shared[0] = Date.now();
}, BEAT_MS).unref();

function failed(e) {
    parentPort.postMessage({
        type: 'load_failed',
        error: String(e && e.message ? e.message : e),
    });
}

try {
    const handlers = await sandbox.load();
    if (workerData.manifest && !sameHandlers(handlers, workerData.manifest)) {
        failed(new Error('the package manifest does not list the handlers '
                         + 'its code declares'));
    } else {
        if (workerData.listen && !draining) {
            server = new RuntimeServer({
                app: workerData.app, isolate: executor,
                handlers: workerData.manifest || handlers,
                exposeErrors: workerData.exposeErrors,
                restarts: workerData.restarts,
            });
            await server.listen(workerData.listen);
        }
        parentPort.postMessage({ type: 'loaded', handlers });
    }
} catch (e) {
    failed(e);
}
