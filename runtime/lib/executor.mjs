// Calls into the sandbox from inside its thread: each a promise settled by
// the sandbox, or rejected "timeout" by a timer when the handler waits too
// long.  The earliest deadline of the calls in flight is published in
// shared memory, so the supervising thread can tell a handler that holds
// the thread (a loop that never yields: no timer here can fire) and
// terminate the isolate.

import { CallError } from './errors.mjs';

export class Executor {
    constructor(sandbox, shared) {
        this.sandbox = sandbox;
        this.shared = shared;           /* Float64Array: [beat, deadline] */
        this.calls = new Map();
        this.nextId = 1;
    }

    publishDeadline() {
        let earliest = 0;
        for (const c of this.calls.values()) {
            if (earliest === 0 || c.deadline < earliest) {
                earliest = c.deadline;
            }
        }
        this.shared[1] = earliest;
    }

    // As AppIsolate.call: resolves with {status, headers, body, type, logs}
    // (raw: body is the result's JSON text; stream: body is a stream's
    // number) or rejects with a CallError.  spread: request is the array
    // of the handler's arguments.
    call(index, request, body, timeoutMs, raw = false, spread = false) {
        return this.track(timeoutMs, (id) => this.sandbox.invoke(
            id, index, request, body, raw, spread));
    }

    // The next chunk of stream: resolves with {type: "chunk", body} or
    // {type: "end"}, under the same deadline rules as a call.
    pull(stream, timeoutMs) {
        return this.track(timeoutMs, (id) => this.sandbox.pull(id, stream));
    }

    cancel(stream) {
        this.sandbox.cancel(stream);
    }

    track(timeoutMs, begin) {
        const id = this.nextId++;
        const deadline = Date.now() + timeoutMs;
        this.shared[2]++;               /* calls started, for load reports */
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this.calls.delete(id);
                this.publishDeadline();
                reject(new CallError('timeout', 'the handler did not answer '
                                     + `within ${timeoutMs} ms`));
            }, timeoutMs);
            this.calls.set(id, { resolve, reject, timer, deadline });
            if (this.shared[1] === 0 || deadline < this.shared[1]) {
                this.shared[1] = deadline;
            }
            begin(id);
        });
    }

    settle(id, result) {
        const call = this.calls.get(id);
        if (call === undefined) {
            return false;               /* answered already: timed out */
        }
        this.calls.delete(id);
        clearTimeout(call.timer);
        if (call.deadline === this.shared[1]) {
            this.publishDeadline();
        }
        if (result.error !== undefined) {
            call.reject(new CallError('handler_error', result.error,
                                      { stack: result.stack,
                                        logs: result.logs }));
        } else {
            call.resolve(result);
        }
        return true;
    }
}
