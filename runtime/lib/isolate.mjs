// The process side of an application's worker thread: starts it, relays
// its storage requests to provend, watches it, and replaces it when it
// dies or is stuck.  In serve mode the thread answers the app's socket
// itself (thread.mjs); this side never sees a request.
//
// Stuck: the thread's heartbeat (shared memory) has stopped and a call in
// flight is past its deadline, so a handler holds the thread in a loop
// that never yields.  The thread is terminated: its connections close
// (nginx answers 502 for the calls in flight) and a fresh isolate takes
// the socket.  A thread that exits (out of memory, a crash) is restarted
// with a backoff.

import { EventEmitter } from 'node:events';
import { Worker } from 'node:worker_threads';

import { CallError } from './errors.mjs';

export { CallError };

const THREAD = new URL('./thread.mjs', import.meta.url);
const WATCH_MS = 25;
const STUCK_GRACE_MS = 100;
const RESTART_MIN_MS = 50;
const RESTART_MAX_MS = 5000;

export class AppIsolate extends EventEmitter {
    // options: memoryMb, timeoutMax, loadTimeoutMs, storage ((request) =>
    // Promise), and for serve mode listen (a socket path), manifest (the
    // package's handler list, checked against the code) and exposeErrors.
    constructor(app, modules, options = {}) {
        super();
        this.app = app;
        this.modules = modules;
        this.memoryMb = options.memoryMb || 128;
        this.timeoutMax = options.timeoutMax || 300000;
        this.loadTimeoutMs = options.loadTimeoutMs || 5000;
        this.storage = options.storage || null;
        this.listen = options.listen || null;
        this.manifest = options.manifest || null;
        this.exposeErrors = Boolean(options.exposeErrors);
        this.thread = null;
        this.ready = null;
        this.restarts = 0;
        this.backoff = RESTART_MIN_MS;
        this.closed = false;
        this.draining = false;
        this.handlers = null;
        this.shared = null;
        this.watch = null;
        this.elu = null;
        this.eluThread = null;
    }

    // The last interval's load: busy, the thread's event loop utilization
    // in thousandths, and calls, those its thread started so far.
    load() {
        const thread = this.thread;
        if (thread === null) {
            return { busy: 0, calls: 0 };
        }
        const now = thread.performance.eventLoopUtilization();
        const since = this.eluThread === thread
            ? thread.performance.eventLoopUtilization(now, this.elu) : now;
        this.elu = now;
        this.eluThread = thread;
        return { busy: Math.round(since.utilization * 1000),
                 calls: this.shared[2] };
    }

    // Resolves with the handlers the package's code declares, once loaded
    // (and in serve mode, listening).
    start() {
        // [heartbeat, earliest deadline, calls started]
        const sab = new SharedArrayBuffer(24);
        const thread = new Worker(THREAD, {
            workerData: {
                app: this.app, modules: this.modules,
                timeoutMax: this.timeoutMax, shared: sab,
                listen: this.listen, manifest: this.manifest,
                exposeErrors: this.exposeErrors, restarts: this.restarts,
            },
            resourceLimits: {
                maxOldGenerationSizeMb: this.memoryMb,
                maxYoungGenerationSizeMb: Math.min(32, this.memoryMb),
                stackSizeMb: 4,
            },
        });
        this.thread = thread;
        this.shared = new Float64Array(sab);

        this.ready = new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                reject(new CallError('load_failed', 'loading the package '
                                     + `took over ${this.loadTimeoutMs} ms`));
                thread.terminate();
            }, this.loadTimeoutMs);

            thread.on('message', (m) => {
                if (m.type === 'loaded') {
                    clearTimeout(timer);
                    this.handlers = m.handlers;
                    resolve(m.handlers);
                    this.watchThread(thread);
                } else if (m.type === 'load_failed') {
                    // a thread that cannot serve must not linger: its exit
                    // brings the restart (serve mode) or ends the check
                    clearTimeout(timer);
                    reject(new CallError('load_failed', m.error));
                    thread.terminate();
                } else if (m.type === 'storage') {
                    this.storageRequest(thread, m);
                } else if (m.type === 'drained') {
                    this.emit('drained');
                }
            });

            let error = null;
            thread.on('error', (err) => {
                clearTimeout(timer);
                error = err;
                reject(new CallError('load_failed', err.message));
            });

            // Node 18 may tell of the exit before the error that caused
            // it: wait a turn so the cause is known.
            thread.on('exit', () => {
                clearTimeout(timer);
                reject(new CallError('load_failed', 'the worker exited'));
                setImmediate(() => this.died(thread, error));
            });
        });
        this.ready.catch(() => {});
        return this.ready;
    }

    watchThread(thread) {
        clearInterval(this.watch);
        this.watch = setInterval(() => {
            const now = Date.now();
            const [beat, deadline] = this.shared;
            if (thread === this.thread && deadline > 0
                && now > deadline + STUCK_GRACE_MS
                && now - beat > STUCK_GRACE_MS)
            {
                clearInterval(this.watch);
                this.emit('stuck');
                process.stderr.write(`proven-runtime: app ${this.app}: a `
                                     + 'call held the isolate past its '
                                     + 'timeout; starting a fresh one\n');
                thread.terminate();
            }
        }, WATCH_MS);
        this.watch.unref();
    }

    async storageRequest(thread, m) {
        let answer;
        try {
            if (this.storage === null) {
                throw { code: 'unavailable', message: 'storage is '
                        + 'unavailable: the runtime runs without provend' };
            }
            const result = await this.storage(m.request);
            answer = { type: 'storage_result', id: m.id, ok: true, result };
        } catch (e) {
            answer = { type: 'storage_result', id: m.id, ok: false,
                       error: { code: e.code || 'internal',
                                message: e.message || String(e) } };
        }
        if (thread === this.thread) {
            thread.postMessage(answer);
        }
    }

    died(thread, err) {
        if (thread !== this.thread) {
            return;
        }
        this.thread = null;
        clearInterval(this.watch);

        const why = err && err.code === 'ERR_WORKER_OUT_OF_MEMORY'
            ? 'the app ran out of memory' : 'the app worker stopped';
        this.emit('died', why);
        if (this.listen) {
            process.stderr.write(`proven-runtime: app ${this.app}: ${why}\n`);
        }

        // a thread that dies while draining has nothing left to finish,
        // and no fresh one may take the socket again
        if (this.draining) {
            this.emit('drained');
            return;
        }
        if (this.closed || !this.listen) {
            return;
        }
        this.restarts++;
        const delay = this.backoff;
        this.backoff = Math.min(this.backoff * 2, RESTART_MAX_MS);
        this.restartTimer = setTimeout(() => {
            this.restartTimer = null;
            if (!this.closed && !this.draining) {
                this.start().then(() => {
                    this.backoff = RESTART_MIN_MS;
                }, () => {});
            }
        }, delay);
    }

    // Serve mode: the thread stops listening and finishes its calls.
    drain(ms) {
        this.draining = true;
        clearTimeout(this.restartTimer);
        if (this.thread === null) {
            return Promise.resolve();
        }
        return new Promise((resolve) => {
            const timer = setTimeout(resolve, ms + 1000);
            this.once('drained', () => {
                clearTimeout(timer);
                resolve();
            });
            this.thread.postMessage({ type: 'drain', ms });
        });
    }

    async close() {
        this.closed = true;
        clearTimeout(this.restartTimer);
        clearInterval(this.watch);
        if (this.thread) {
            const t = this.thread;
            await t.terminate();
        }
    }
}
