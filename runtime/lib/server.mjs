// The runtime's socket: frames from nginx (ngx_proven_app) and provend.
//
// Request  {"id", "op": "app.http", "method", "path", "query"?: text,
//           "headers"?: {name: value} or [[name, value], ...],
//           "body"?: bytes}
// Answer   {"id", "ok": true, "result": {"status", "headers": [[n, v]],
//           "body": bytes}}
//          {"id", "ok": false, "error": {"code", "message", "error_id"?}}
// Codes: not_found, method_not_allowed (with "allow"), bad_request,
// timeout, handler_error, worker_died, busy.
// "app.run" {handler: "module#name", args?, spread?, trigger?} runs a run,
// runWithOptions, runOnSchedule, runOnEthereumEvent or runOnRadixEvent
// handler with args as its argument (spread: args is the array of its
// arguments, as RPC's Execute sends); the last three only with trigger
// "schedule", "ethereum" or "radix", which provend's own frames carry (a
// caller's Execute never does):
// {output, logs, duration_us}, or the error codes above with "logs".
// With "identity" and "grant" (provend's, for a call from an identified
// session) the handler's personal storage is that identity's.  Also "app.logs" (recent console lines) and
// "runtime.status".
//
// A streamed body (the handler's body is an async iterable) answers
// app.http with "stream": N and an empty body; the caller then pulls:
// "app.next" {stream: N} -> {chunk: bytes, more: bool}, one chunk at a
// time, each under the handler's timeout.  "app.cancel" {stream: N}, or
// STREAM_IDLE_MS without a pull, ends it (its iterator's return() runs).

import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';

import { caller } from './caller.mjs';
import { encodeFrame, encodeHttpAnswer, FrameReader } from './frames.mjs';
import { CallInputError, Routes } from './routes.mjs';

const CALLS_MAX = 1024;                    /* in flight, whole process */
const LOG_LINES_MAX = 1000;
const LOG_BYTES_MAX = 256 * 1024;
const DEFAULT_TIMEOUT_MS = 10000;
const STREAM_IDLE_MS = 30000;
const CHUNK_MAX = 1024 * 1024;
const TEXT_TYPE = /^(text\/|application\/(json|x-www-form-urlencoded|[a-z.+-]*\+json)\b)/i;
const utf8 = new TextDecoder('utf-8', { fatal: false });

export class RuntimeServer {
    // isolate: what runs calls (the thread's Executor); restarts: how many
    // isolates came before this one.
    constructor({ app, isolate, handlers, exposeErrors, restarts = 0 }) {
        this.app = app;
        this.isolate = isolate;
        this.handlers = handlers;
        this.routes = new Routes(handlers);
        this.exposeErrors = exposeErrors;
        this.inFlight = 0;
        this.logs = [];
        this.logBytes = 0;
        this.connections = new Set();
        this.streams = new Map();       /* open streamed bodies */
        this.served = 0;
        this.restarts = restarts;
    }

    listen(socketPath) {
        try {
            fs.unlinkSync(socketPath);
        } catch (e) {
            if (e.code !== 'ENOENT') {
                throw e;
            }
        }
        this.server = net.createServer((c) => this.accept(c));
        return new Promise((resolve, reject) => {
            this.server.once('error', reject);
            this.server.listen(socketPath, () => {
                fs.chmodSync(socketPath, 0o660);
                resolve();
            });
        });
    }

    // Stops listening, waits for the calls under way (up to ms), closes.
    async drain(ms) {
        this.server.close();
        const until = Date.now() + ms;
        while (this.inFlight > 0 && Date.now() < until) {
            await new Promise((r) => setTimeout(r, 10));
        }
        // end, not destroy: the last answers may still be corked
        for (const c of this.connections) {
            c.end();
        }
        await new Promise((r) => setTimeout(r, 100));
        for (const c of this.connections) {
            c.destroy();
        }
    }

    close() {
        for (const c of this.connections) {
            c.destroy();
        }
        return new Promise((resolve) => this.server.close(() => resolve()));
    }

    accept(conn) {
        this.connections.add(conn);
        const reader = new FrameReader(
            (frame) => this.frame(conn, frame),
            (err) => {
                this.reply(conn, { ok: false, error: {
                    code: 'bad_request', message: err.message } });
                conn.end();
            });
        conn.on('data', (chunk) => reader.push(chunk));
        conn.on('error', () => {});
        conn.on('close', () => this.connections.delete(conn));
    }

    // Answers written in one turn of the event loop leave in one write.
    reply(conn, answer) {
        this.send(conn, encodeFrame(answer));
    }

    send(conn, frame) {
        if (conn.destroyed) {
            return;
        }
        if (!conn.corked) {
            conn.corked = true;
            conn.cork();
            setImmediate(() => {
                conn.corked = false;
                conn.uncork();
            });
        }
        conn.write(frame);
    }

    fail(conn, id, code, message, extra = {}) {
        this.reply(conn, { id, ok: false, error: { code, message, ...extra } });
    }

    frame(conn, f) {
        const id = f.id;
        if (!Number.isInteger(id) || id < 0) {
            return this.fail(conn, null, 'bad_request',
                             'a request needs an unsigned "id"');
        }
        switch (f.op) {
        case 'app.http':
            return this.http(conn, id, f);
        case 'app.run':
            return this.run(conn, id, f);
        case 'app.next':
            return this.next(conn, id, f);
        case 'app.cancel':
            this.closeStream(f.stream, true);
            return this.reply(conn, { id, ok: true, result: null });
        case 'app.logs':
            return this.reply(conn, { id, ok: true,
                                      result: { lines: this.logs } });
        case 'runtime.status':
            return this.reply(conn, { id, ok: true, result: {
                app: this.app, handlers: this.handlers.length,
                in_flight: this.inFlight, served: this.served,
                restarts: this.restarts } });
        default:
            return this.fail(conn, id, 'unknown_op',
                             `unknown op ${JSON.stringify(f.op)}`);
        }
    }

    record(logs) {
        if (!logs) {
            return;
        }
        for (const [level, line] of logs) {
            this.logs.push([Date.now(), level, line]);
            this.logBytes += line.length;
        }
        while (this.logs.length > LOG_LINES_MAX
               || this.logBytes > LOG_BYTES_MAX)
        {
            this.logBytes -= this.logs.shift()[2].length;
        }
    }

    async http(conn, id, f) {
        if (typeof f.method !== 'string' || typeof f.path !== 'string'
            || !f.path.startsWith('/') || f.path.length > 8192)
        {
            return this.fail(conn, id, 'bad_request',
                             'app.http needs a method and a path');
        }
        if (this.inFlight >= CALLS_MAX) {
            return this.fail(conn, id, 'busy', 'too many calls in flight');
        }

        let match, request, body;
        try {
            match = this.routes.match(f.method.toUpperCase(), f.path);
            if (match.status === 404) {
                return this.fail(conn, id, 'not_found', `no route for `
                                 + `${f.method} ${f.path}`);
            }
            if (match.status === 405) {
                return this.fail(conn, id, 'method_not_allowed',
                                 `${f.path} does not take ${f.method}`,
                                 { allow: match.allow });
            }
            const headers = headerMap(f.headers);
            request = {
                method: f.method.toUpperCase(),
                path: f.path,
                pathParameters: match.params,
                queryParameters: queryMap(f.query),
                headers,
            };
            body = bodyOf(f.body, headers['content-type']);
        } catch (e) {
            if (e instanceof CallInputError) {
                return this.fail(conn, id, 'bad_request', e.message);
            }
            throw e;
        }

        const timeout = match.handler.timeout || DEFAULT_TIMEOUT_MS;
        this.inFlight++;
        try {
            const r = await this.isolate.call(match.index, request, body,
                                              timeout);
            this.record(r.logs);
            const headers = r.headers.filter(
                ([n]) => n.toLowerCase() !== 'content-type' || r.type);
            if (r.type && !r.headers.some(
                ([n]) => n.toLowerCase() === 'content-type'))
            {
                headers.push(['content-type', r.type]);
            }
            this.served++;
            if (r.stream) {
                this.openStream(r.body, timeout);
                this.reply(conn, { id, ok: true, result: {
                    status: r.status, headers, body: Buffer.alloc(0),
                    stream: r.body } });
                return;
            }
            this.send(conn, encodeHttpAnswer(id, r.status, headers,
                r.body === null ? Buffer.alloc(0)
                    : typeof r.body === 'string' ? Buffer.from(r.body)
                    : r.body));
        } catch (e) {
            this.callFailed(conn, id, e);
        } finally {
            this.inFlight--;
        }
    }

    // A call that threw or timed out: its error answer (and error id).
    callFailed(conn, id, e) {
        this.record(e.logs);
        if (e.code === 'handler_error') {
            const errorId = randomBytes(8).toString('hex');
            process.stderr.write(`proven-runtime: app ${this.app} error `
                                 + `${errorId}: ${e.message}\n`);
            this.fail(conn, id, 'handler_error', this.exposeErrors
                ? e.message : 'the handler failed', { error_id: errorId });
        } else if (e.code) {
            this.fail(conn, id, e.code, e.message);
        } else {
            this.fail(conn, id, 'internal', `runtime: ${e.message}`);
        }
    }

    openStream(stream, timeout) {
        const s = { timeout, busy: false, timer: null };
        this.streams.set(stream, s);
        this.idleStream(stream, s);
    }

    idleStream(stream, s) {
        clearTimeout(s.timer);
        s.timer = setTimeout(() => this.closeStream(stream, true),
                             STREAM_IDLE_MS);
        s.timer.unref();
    }

    closeStream(stream, cancel) {
        const s = this.streams.get(stream);
        if (s !== undefined) {
            clearTimeout(s.timer);
            this.streams.delete(stream);
            if (cancel) {
                this.isolate.cancel(stream);
            }
        }
    }

    async next(conn, id, f) {
        const s = this.streams.get(f.stream);
        if (s === undefined) {
            return this.fail(conn, id, 'not_found', 'no such stream (it '
                             + `ended, or was not read for ${STREAM_IDLE_MS} `
                             + 'ms)');
        }
        if (s.busy) {
            return this.fail(conn, id, 'busy', 'the stream is being read');
        }
        s.busy = true;
        clearTimeout(s.timer);
        this.inFlight++;
        try {
            const r = await this.isolate.pull(f.stream, s.timeout);
            this.record(r.logs);
            if (r.type === 'end') {
                this.closeStream(f.stream, false);
                this.reply(conn, { id, ok: true, result: {
                    chunk: Buffer.alloc(0), more: false } });
                return;
            }
            const chunk = typeof r.body === 'string' ? Buffer.from(r.body)
                                                     : r.body;
            if (chunk.length > CHUNK_MAX) {
                this.closeStream(f.stream, true);
                return this.fail(conn, id, 'handler_error', 'a streamed '
                                 + `chunk is over ${CHUNK_MAX} bytes`);
            }
            s.busy = false;
            this.idleStream(f.stream, s);
            this.reply(conn, { id, ok: true, result: { chunk, more: true } });
        } catch (e) {
            this.closeStream(f.stream, true);
            this.callFailed(conn, id, e);
        } finally {
            this.inFlight--;
        }
    }
}

RuntimeServer.prototype.run = async function run(conn, id, f) {
    if (this.runnable === undefined) {
        /* "module#name" -> index of the run and schedule handlers */
        this.runnable = new Map();
        this.handlers.forEach((h, i) => {
            if (h.kind === 'rpc' || h.kind === 'schedule'
                || h.kind === 'ethereum' || h.kind === 'radix') {
                this.runnable.set(`${h.module}#${h.name}`, i);
            }
        });
    }
    const index = typeof f.handler === 'string'
        ? this.runnable.get(f.handler) ?? -1 : -1;
    if (index < 0) {
        return this.fail(conn, id, 'not_found', `no run, schedule, `
                         + `ethereum or radix handler `
                         + JSON.stringify(f.handler));
    }
    /* a trigger's handler takes what provend proved, from provend only */
    const kind = this.handlers[index].kind;
    if (kind !== 'rpc' && f.trigger !== kind) {
        return this.fail(conn, id, 'not_found', `${JSON.stringify(f.handler)}`
                         + ` is ${kind === 'ethereum' ? 'an' : 'a'} ${kind}`
                         + ` handler: run by its trigger only`);
    }
    if (this.inFlight >= CALLS_MAX) {
        return this.fail(conn, id, 'busy', 'too many calls in flight');
    }

    const started = process.hrtime.bigint();
    const elapsed = () => Number((process.hrtime.bigint() - started) / 1000n);
    this.inFlight++;
    try {
        const spread = f.spread === true && Array.isArray(f.args);
        const who = typeof f.identity === 'string'
                    && typeof f.grant === 'string'
            ? { identity: f.identity, grant: f.grant } : null;
        const r = await caller.run(who, () => this.isolate.call(
            index, f.args === undefined ? null : f.args, null,
            this.handlers[index].timeout || DEFAULT_TIMEOUT_MS, true,
            spread));
        this.record(r.logs);
        this.served++;
        this.reply(conn, { id, ok: true, result: {
            output: JSON.parse(r.body), logs: logLines(r.logs),
            duration_us: elapsed() } });
    } catch (e) {
        this.record(e.logs);
        this.fail(conn, id, e.code || 'internal', this.exposeErrors
                  || e.code !== 'handler_error' ? e.message
                                                : 'the handler failed',
                  { logs: logLines(e.logs), duration_us: elapsed() });
    } finally {
        this.inFlight--;
    }
};

function logLines(logs) {
    return (logs || []).map(([level, line]) => ({ level, line }));
}

function headerMap(headers) {
    const out = {};
    if (headers == null) {
        return out;
    }
    const pairs = Array.isArray(headers) ? headers : Object.entries(headers);
    for (const pair of pairs) {
        if (!Array.isArray(pair) || pair.length !== 2
            || typeof pair[0] !== 'string' || typeof pair[1] !== 'string')
        {
            throw new CallInputError('headers are [name, value] text pairs');
        }
        const name = pair[0].toLowerCase();
        out[name] = out[name] === undefined ? pair[1]
                                            : `${out[name]}, ${pair[1]}`;
    }
    return out;
}

function queryMap(query) {
    const out = {};
    if (query == null || query === '') {
        return out;
    }
    if (typeof query !== 'string') {
        throw new CallInputError('query is text');
    }
    for (const [k, v] of new URLSearchParams(query)) {
        if (out[k] === undefined) {
            out[k] = v;
        } else if (Array.isArray(out[k])) {
            out[k].push(v);
        } else {
            out[k] = [out[k], v];
        }
    }
    return out;
}

// Text bodies reach the handler as strings, others as bytes.
function bodyOf(body, type) {
    if (body == null || body.length === 0) {
        return null;
    }
    if (!(body instanceof Uint8Array)) {
        throw new CallInputError('body is a byte string');
    }
    return type !== undefined && TEXT_TYPE.test(type)
        ? utf8.decode(body) : body;
}
