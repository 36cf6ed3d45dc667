// The worker's own line to provend: a socket pair provend made (an inherited
// fd), on which provend serves kv.* and sql.* of this app only.  Requests
// carry the app's scope; provend refuses any other.

import net from 'node:net';

import { encodeFrame, FrameReader } from './frames.mjs';

const PENDING_MAX = 4096;

export class ProvendLine {
    constructor(fd, app) {
        this.app = app;
        this.nextId = 1;
        this.pending = new Map();
        this.closed = false;
        this.socket = new net.Socket({ fd, readable: true, writable: true });
        const reader = new FrameReader((f) => this.answer(f),
                                       (e) => this.close(e.message));
        this.socket.on('data', (chunk) => reader.push(chunk));
        this.socket.on('error', (e) => this.close(e.message));
        this.socket.on('close', () => this.close('provend closed the line'));
    }

    // request: {op, ...arguments} without scope; resolves with the result.
    call(request) {
        if (this.closed) {
            return Promise.reject({ code: 'unavailable',
                                    message: 'provend is unreachable' });
        }
        if (this.pending.size >= PENDING_MAX) {
            return Promise.reject({ code: 'busy', message: 'too many storage '
                                    + 'requests in flight' });
        }
        const { personal, caller, ...args } = request;
        if (personal && !caller) {
            return Promise.reject({ code: 'unavailable', message: 'personal '
                                    + 'storage is for calls from an '
                                    + 'identified session' });
        }
        const id = this.nextId++;
        const frame = personal
            ? { ...args, id, grant: caller.grant,
                scope: { app: this.app, kind: 'personal',
                         identity: caller.identity } }
            : { ...args, id, scope: { app: this.app } };
        return new Promise((resolve, reject) => {
            this.pending.set(id, { resolve, reject });
            try {
                this.socket.write(encodeFrame(frame));
            } catch (e) {
                this.pending.delete(id);
                reject({ code: 'bad_request', message: e.message });
            }
        });
    }

    answer(f) {
        const p = this.pending.get(f.id);
        if (p === undefined) {
            return;
        }
        this.pending.delete(f.id);
        if (f.ok) {
            p.resolve(f.result);
        } else {
            p.reject(f.error || { code: 'internal', message: 'no error' });
        }
    }

    close(why) {
        if (this.closed) {
            return;
        }
        this.closed = true;
        for (const p of this.pending.values()) {
            p.reject({ code: 'unavailable', message: `provend: ${why}` });
        }
        this.pending.clear();
        this.socket.destroy();
    }
}
