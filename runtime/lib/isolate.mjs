// The process side of an application's worker thread: starts it, sends it
// calls, times them out, and replaces the thread when it dies or spins.
//
// A call past its timeout is answered "timeout" at once.  The thread is
// then pinged: a thread that does not answer within PING_GRACE_MS is stuck
// in a loop and is terminated (its other calls fail "worker_died") and a
// fresh one is started; a thread that answers was only waiting, and keeps
// serving.  A thread that exits (out of memory, a crash) fails its calls
// "worker_died" and is restarted with a backoff.

import { EventEmitter } from 'node:events';
import { Worker } from 'node:worker_threads';

const THREAD = new URL('./thread.mjs', import.meta.url);
const PING_GRACE_MS = 200;
const RESTART_MIN_MS = 50;
const RESTART_MAX_MS = 5000;

export class CallError extends Error {
    constructor(code, message, extra = {}) {
        super(message);
        this.code = code;
        Object.assign(this, extra);
    }
}

export class AppIsolate extends EventEmitter {
    constructor(app, modules, options = {}) {
        super();
        this.app = app;
        this.modules = modules;
        this.memoryMb = options.memoryMb || 128;
        this.timeoutMax = options.timeoutMax || 300000;
        this.loadTimeoutMs = options.loadTimeoutMs || 5000;
        // (request) => Promise of a result; rejects with {code, message}
        this.storage = options.storage || null;
        this.thread = null;
        this.ready = null;
        this.calls = new Map();
        this.nextId = 1;
        this.pingSeq = 0;
        this.restarts = 0;
        this.backoff = RESTART_MIN_MS;
        this.closed = false;
        this.handlers = null;
    }

    // Resolves with the handlers the package's code declares.
    start() {
        const thread = new Worker(THREAD, {
            workerData: { app: this.app, modules: this.modules,
                          timeoutMax: this.timeoutMax },
            resourceLimits: {
                maxOldGenerationSizeMb: this.memoryMb,
                maxYoungGenerationSizeMb: Math.min(32, this.memoryMb),
                stackSizeMb: 4,
            },
            stdout: true,
            stderr: true,
        });
        this.thread = thread;

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
                    this.backoff = RESTART_MIN_MS;
                    resolve(m.handlers);
                } else if (m.type === 'load_failed') {
                    clearTimeout(timer);
                    reject(new CallError('load_failed', m.error));
                } else {
                    this.message(thread, m);
                }
            });

            let error = null;
            thread.on('error', (err) => {
                clearTimeout(timer);
                error = err;
                reject(new CallError('load_failed', err.message));
                this.died(thread, err);
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

    message(thread, m) {
        if (thread !== this.thread) {
            return;
        }
        if (m.type === 'settle') {
            const call = this.calls.get(m.id);
            if (call === undefined) {
                return;                 /* answered already: timed out */
            }
            this.calls.delete(m.id);
            clearTimeout(call.timer);
            if (m.result.error !== undefined) {
                call.reject(new CallError('handler_error', m.result.error,
                                          { stack: m.result.stack,
                                            logs: m.result.logs }));
            } else {
                call.resolve(m.result);
            }
        } else if (m.type === 'storage') {
            this.storageRequest(thread, m);
        } else if (m.type === 'pong' && m.seq === this.pingSeq) {
            clearTimeout(this.pingTimer);
            this.pingTimer = null;
        }
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
        clearTimeout(this.pingTimer);
        this.pingTimer = null;

        const why = err && err.code === 'ERR_WORKER_OUT_OF_MEMORY'
            ? 'the app ran out of memory' : 'the app worker stopped';
        for (const call of this.calls.values()) {
            clearTimeout(call.timer);
            call.reject(new CallError('worker_died', why));
        }
        this.calls.clear();
        this.emit('died', why);

        if (this.closed) {
            return;
        }
        this.restarts++;
        const delay = this.backoff;
        this.backoff = Math.min(this.backoff * 2, RESTART_MAX_MS);
        this.restartTimer = setTimeout(() => {
            this.restartTimer = null;
            if (!this.closed) {
                this.start();
            }
        }, delay);
    }

    // Runs handler index with request (JSON-able) and body (a string, a
    // Uint8Array or null); resolves with {status, headers, body, type,
    // logs} or rejects with a CallError.  raw: request is the handler's
    // argument and body (JSON text) its result, for run and schedules.
    async call(index, request, body, timeoutMs, raw = false) {
        if (this.thread === null || this.ready === null) {
            throw new CallError('worker_died', 'the app worker is restarting');
        }
        await this.ready;
        const thread = this.thread;
        if (thread === null) {
            throw new CallError('worker_died', 'the app worker is restarting');
        }

        const id = this.nextId++;
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this.calls.delete(id);
                reject(new CallError('timeout', 'the handler did not answer '
                                     + `within ${timeoutMs} ms`));
                this.checkStuck(thread);
            }, timeoutMs);
            this.calls.set(id, { resolve, reject, timer });
            thread.postMessage({ type: 'call', id, index, request, body,
                                 raw });
        });
    }

    checkStuck(thread) {
        if (this.pingTimer || thread !== this.thread) {
            return;
        }
        const seq = ++this.pingSeq;
        this.pingTimer = setTimeout(() => {
            this.pingTimer = null;
            if (thread === this.thread) {
                this.emit('stuck');
                thread.terminate();
            }
        }, PING_GRACE_MS);
        thread.postMessage({ type: 'ping', seq });
    }

    async close() {
        this.closed = true;
        clearTimeout(this.restartTimer);
        if (this.thread) {
            const t = this.thread;
            await t.terminate();
        }
    }
}
