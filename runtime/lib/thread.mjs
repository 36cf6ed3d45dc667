// A worker thread holding one application version's sandbox.  Its own V8
// isolate: the process can terminate it when a call spins, and its heap
// limit (resourceLimits) stops a call that allocates without end, while
// the process and the other apps' threads go on.

import { parentPort, workerData } from 'node:worker_threads';

import { Sandbox } from './sandbox.mjs';

const sandbox = new Sandbox(workerData.modules, {
    settle(id, result) {
        parentPort.postMessage({ type: 'settle', id, result });
    },
    storage(id, request) {
        parentPort.postMessage({ type: 'storage', id, request });
    },
}, { name: workerData.app, timeoutMax: workerData.timeoutMax });

parentPort.on('message', (m) => {
    if (m.type === 'call') {
        sandbox.invoke(m.id, m.index, m.request, m.body, m.raw);
    } else if (m.type === 'storage_result') {
        sandbox.resume(m.id, m.ok, m.ok ? m.result : m.error);
    } else if (m.type === 'ping') {
        parentPort.postMessage({ type: 'pong', seq: m.seq });
    }
});

try {
    const handlers = await sandbox.load();
    parentPort.postMessage({ type: 'loaded', handlers });
} catch (e) {
    parentPort.postMessage({
        type: 'load_failed',
        error: String(e && e.message ? e.message : e),
    });
}
