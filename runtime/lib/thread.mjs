// A worker thread holding one application version's sandbox, in an isolate
// of its own: its heap limit (resourceLimits) stops a call that allocates
// without end, and the supervising thread can terminate it when a call
// holds it past its deadline, while the process goes on.  In serve mode
// the thread also answers the app's socket itself, so a request never
// crosses between threads.

import { parentPort, workerData } from 'node:worker_threads';

import { Executor } from './executor.mjs';
import { sameHandlers } from './package.mjs';
import { Sandbox } from './sandbox.mjs';
import { RuntimeServer } from './server.mjs';

const BEAT_MS = 10;

const shared = new Float64Array(workerData.shared);
let executor = null;

const sandbox = new Sandbox(workerData.modules, {
    settle(id, result) {
        executor.settle(id, result);
    },
    storage(id, request) {
        parentPort.postMessage({ type: 'storage', id, request });
    },
}, { name: workerData.app, timeoutMax: workerData.timeoutMax });
executor = new Executor(sandbox, shared);

let server = null;

parentPort.on('message', async (m) => {
    if (m.type === 'storage_result') {
        sandbox.resume(m.id, m.ok, m.ok ? m.result : m.error);
    } else if (m.type === 'drain' && server !== null) {
        await server.drain(m.ms);
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
        if (workerData.listen) {
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
