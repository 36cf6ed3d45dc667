// One application version in its own V8 context.
//
// The context holds the ECMAScript built-ins and nothing of Node: no
// require, no process, no import of node: modules (static imports resolve
// only inside the package or to @proven-network/*, dynamic import() has no
// loader at all), no eval or new Function (code generation from strings is
// off).  Our API is built inside the context by SETUP_SOURCE, so every
// function and object app code can reach belongs to the context: walking
// .constructor chains ends at the context's Function, never the host's.
// The host talks to that code through a handful of functions it passes in
// once, which the setup code keeps in its closure and calls only with
// strings, numbers and byte arrays it made itself.
//
// This is one layer: the worker process around it (see README, Sandbox)
// is the boundary that holds if a V8 bug lets code out of the context.

import vm from 'node:vm';
import path from 'node:path';
import { types } from 'node:util';

import { parse as parseModule } from 'acorn';

// Limits for what a call may write to the console.
export const LOG_LINE_MAX = 8 * 1024;
export const LOG_CALL_MAX = 64 * 1024;

const HTTP_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD',
    'OPTIONS'];

// Runs inside the context: builds the API modules' exports and the entry
// points the host calls.  It must not trust any built-in after user code
// has run, so it takes what it needs before returning.
const SETUP_SOURCE = String.raw`(function setup(host, limits) {
    'use strict';

    const apply = Reflect.apply;
    const freeze = Object.freeze;
    const keys = Object.keys;
    const getProto = Object.getPrototypeOf;
    const ObjectProto = Object.prototype;
    const parse = JSON.parse;
    const stringify = JSON.stringify;
    const isArray = Array.isArray;
    const isInteger = Number.isInteger;
    const StringOf = String;
    const U8 = Uint8Array;
    const isView = ArrayBuffer.isView;
    const ArrayBufferCtor = ArrayBuffer;
    const resolve = Promise.resolve;
    const PromiseCtor = Promise;
    const then = Promise.prototype.then;
    const WeakMapCtor = WeakMap;
    const mapGet = WeakMap.prototype.get;
    const mapSet = WeakMap.prototype.set;
    const push = Array.prototype.push;
    const join = Array.prototype.join;
    const slice = String.prototype.slice;
    const test = RegExp.prototype.test;
    const TypeErrorCtor = TypeError;
    const ErrorCtor = Error;
    const MapCtor = Map;
    const mapGetM = Map.prototype.get;
    const mapSetM = Map.prototype.set;
    const mapDeleteM = Map.prototype.delete;
    const defineProperty = Object.defineProperty;
    const hasOwn = Object.hasOwn;

    /* Error.prepareStackTrace and friends stay as V8 made them. */
    /*
     * No stack traces in the context.  Formatting one runs Node's own
     * prepareStackTrace callback, host code that app code can make
     * overflow the stack (the RangeError would be the host's), or that
     * would call a globalThis.Error.prepareStackTrace app code set up
     * (even one inherited from Function.prototype) with the host's
     * CallSite objects.  With stackTraceLimit not a number, V8 captures
     * no trace and never formats one: error.stack is undefined.
     */
    for (const name of ['Error', 'TypeError', 'RangeError', 'SyntaxError',
                        'ReferenceError', 'EvalError', 'URIError',
                        'AggregateError'])
    {
        /* the value is given: the vm module copies the descriptor onto
           the sandbox object, which does not hold the built-ins */
        const E = globalThis[name];
        for (const key of ['stackTraceLimit', 'prepareStackTrace']) {
            defineProperty(E, key, { value: undefined, writable: false,
                                     enumerable: false,
                                     configurable: false });
        }
        freeze(E);
        defineProperty(globalThis, name, { value: E, writable: false,
                                           enumerable: false,
                                           configurable: false });
    }

    /*
     * Their callbacks run outside any call, so what they throw goes to
     * the process's uncaught-exception path; and when they run depends on
     * the collector, which no handler should.
     */
    delete globalThis.FinalizationRegistry;
    delete globalThis.WeakRef;

    const METHODS = ${JSON.stringify(HTTP_METHODS)};
    const PATH_RE = /^(\/(:[A-Za-z_][A-Za-z0-9_]*|[A-Za-z0-9._~!$&'()+,;=@-]+))+\/?$|^\/$/;
    const CRON_RANGES = [[0, 59], [0, 23], [1, 31], [1, 12], [0, 6]];

    /*
     * Every call to the host goes through here: an exception from the host
     * side (a stack overflow right at the call, say) would be a host
     * object; app code sees a context error instead.
     */
    function hostCall(fn, args) {
        try {
            return apply(fn, host, args);
        } catch (e) {
            throw new ErrorCtor('runtime: a call to the host failed');
        }
    }

    const described = new WeakMapCtor();
    const bound = [];

    function fail(message) {
        throw new TypeErrorCtor(message);
    }

    function timeoutOf(options, where) {
        if (options.timeout === undefined) {
            return undefined;
        }
        if (!isInteger(options.timeout) || options.timeout < 1
            || options.timeout > limits.timeoutMax)
        {
            fail(where + ': timeout must be a whole number of milliseconds '
                 + 'from 1 to ' + limits.timeoutMax);
        }
        return options.timeout;
    }

    function make(kind, info, fn, where) {
        if (typeof fn !== 'function') {
            fail(where + ': the handler must be a function');
        }
        const handler = function (...args) {
            return apply(fn, undefined, args);
        };
        info.kind = kind;
        apply(mapSet, described, [handler, { info: freeze(info), fn }]);
        return freeze(handler);
    }

    function options(value, where) {
        if (value === null || typeof value !== 'object') {
            fail(where + ': options must be an object');
        }
        return value;
    }

    function checkCron(expression) {
        if (typeof expression !== 'string') {
            fail('runOnSchedule: the schedule must be a cron string');
        }
        const fields = expression.trim().split(/\s+/);
        if (fields.length !== 5) {
            fail('runOnSchedule: "' + expression + '" is not five cron '
                 + 'fields (minute hour day month weekday, UTC)');
        }
        for (let i = 0; i < 5; i++) {
            const [lo, hi] = CRON_RANGES[i];
            for (const part of fields[i].split(',')) {
                const m = /^(\*|([0-9]+)(-([0-9]+))?)(\/([0-9]+))?$/.exec(part);
                const a = m && m[2] !== undefined ? +m[2] : lo;
                const b = m && m[4] !== undefined ? +m[4]
                          : m && m[2] !== undefined ? a : hi;
                const step = m && m[6] !== undefined ? +m[6] : 1;
                if (m === null || a < lo || b > hi || a > b || step < 1
                    || step > hi)
                {
                    fail('runOnSchedule: cron field "' + fields[i]
                         + '" is not valid for the range ' + lo + '-' + hi);
                }
            }
        }
        return fields.join(' ');
    }

    /*
     * runOnEthereumEvent: the filter provend follows (address, topics,
     * confirmations, chain) and, with an event's signature, its arguments
     * decoded from the log provend proved.  ABI types: address, bool,
     * uintN, intN, bytesN, string, bytes (an indexed string or bytes is
     * its hash, as the log holds it).
     */
    const HEX_RE = /^0x[0-9a-f]*$/;
    const EVENT_RE = /^([A-Za-z_$][A-Za-z0-9_$]*)\((.*)\)$/;
    const PARAM_RE = /^(address|bool|string|bytes|bytes([1-9]|[12][0-9]|3[0-2])|u?int(8|16|24|32|40|48|56|64|72|80|88|96|104|112|120|128|136|144|152|160|168|176|184|192|200|208|216|224|232|240|248|256)?)(\s+indexed)?(\s+[A-Za-z_$][A-Za-z0-9_$]*)?$/;
    const CHAINS = { ethereum: 1, sepolia: 11155111, holesky: 17000 };
    const BigIntOf = BigInt;
    const trim = String.prototype.trim;
    const split = String.prototype.split;
    const toLower = String.prototype.toLowerCase;
    const decodeEscapes = decodeURIComponent;

    function eventOf(signature) {
        const where = 'runOnEthereumEvent: event ';
        const m = typeof signature === 'string' && signature.length <= 512
                  ? EVENT_RE.exec(apply(trim, signature, [])) : null;
        if (m === null) {
            fail(where + 'must be a signature like "Transfer(address '
                 + 'indexed from, address indexed to, uint256 value)"');
        }
        const params = [];
        const types = [];
        let indexed = 0;
        const parts = apply(trim, m[2], []) === ''
                      ? [] : apply(split, m[2], [',']);
        for (let i = 0; i < parts.length; i++) {
            const p = PARAM_RE.exec(apply(trim, parts[i], []));
            if (p === null) {
                fail(where + 'parameter ' + stringify(parts[i]) + ' is not '
                     + 'a type (address, bool, uintN, intN, bytesN, string, '
                     + 'bytes), "indexed" and a name');
            }
            let type = p[1];
            if (type === 'uint' || type === 'int') {
                type += '256';
            }
            const isIndexed = p[4] !== undefined;
            indexed += isIndexed ? 1 : 0;
            apply(push, params, [{ type, indexed: isIndexed,
                name: p[5] !== undefined ? apply(trim, p[5], []) : '' + i }]);
            apply(push, types, [type]);
        }
        if (indexed > 3) {
            fail(where + 'has more than 3 indexed parameters');
        }
        return { name: m[1], params,
                 canonical: m[1] + '(' + apply(join, types, [',']) + ')' };
    }

    /* UTF-8 bytes (hex) as text; not UTF-8: the hex itself */
    function utf8Of(hex) {
        let escaped = '';
        for (let i = 2; i < hex.length; i += 2) {
            escaped += '%' + apply(slice, hex, [i, i + 2]);
        }
        try {
            return decodeEscapes(escaped);
        } catch (e) {
            return hex;
        }
    }

    /* one 32-byte word (hex, 64 digits) as its type's value */
    function word(type, hex) {
        if (type === 'address') {
            return '0x' + apply(slice, hex, [24]);
        }
        if (type === 'bool') {
            return BigIntOf('0x' + hex) !== 0n;
        }
        if (apply(slice, type, [0, 4]) === 'uint') {
            return BigIntOf('0x' + hex);
        }
        if (apply(slice, type, [0, 3]) === 'int') {
            const bits = BigIntOf(apply(slice, type, [3]));
            const v = BigIntOf('0x' + hex) & ((1n << bits) - 1n);
            return v >= 1n << (bits - 1n) ? v - (1n << bits) : v;
        }
        /* bytesN: the first N bytes */
        return '0x' + apply(slice, hex, [0, 2 * +apply(slice, type, [5])]);
    }

    function decodeEvent(ev, event) {
        const args = {};
        const data = typeof ev.data === 'string' ? apply(slice, ev.data, [2])
                                                 : '';
        let topic = 1;
        let head = 0;
        for (const p of event.params) {
            let value;
            if (p.indexed) {
                const t = ev.topics[topic++];
                if (typeof t !== 'string' || t.length !== 66) {
                    fail('runOnEthereumEvent: the log has no topic for '
                         + p.name);
                }
                value = p.type === 'string' || p.type === 'bytes'
                        ? t : word(p.type, apply(slice, t, [2]));
            } else if (p.type === 'string' || p.type === 'bytes') {
                const at = 2 * Number(BigIntOf('0x' + apply(slice, data,
                                               [head, head + 64])));
                const len = 2 * Number(BigIntOf('0x' + apply(slice, data,
                                                [at, at + 64])));
                const hex = '0x' + apply(slice, data, [at + 64,
                                                       at + 64 + len]);
                if (at + 64 + len > data.length) {
                    fail('runOnEthereumEvent: the log\'s data does not hold '
                         + p.name + ' (' + p.type + ')');
                }
                value = p.type === 'bytes' ? hex : utf8Of(hex);
                head += 64;
            } else {
                if (head + 64 > data.length) {
                    fail('runOnEthereumEvent: the log\'s data does not hold '
                         + p.name + ' (' + p.type + ')');
                }
                value = word(p.type, apply(slice, data, [head, head + 64]));
                head += 64;
            }
            args[p.name] = value;
        }
        return args;
    }

    function ethereumFilter(opts) {
        const where = 'runOnEthereumEvent: ';
        const info = {};
        const address = typeof opts.address === 'string'
                        ? apply(toLower, opts.address, []) : opts.address;
        if (typeof address !== 'string' || address.length !== 42
            || !apply(test, HEX_RE, [address]))
        {
            fail(where + 'address must be a contract\'s, 0x and 40 hex '
                 + 'digits');
        }
        info.address = address;
        const topics = opts.topics === undefined ? [] : opts.topics;
        if (!isArray(topics) || topics.length > 4) {
            fail(where + 'topics must be a list of 4 at most');
        }
        info.topics = [];
        for (let i = 0; i < topics.length; i++) {
            const t = typeof topics[i] === 'string'
                      ? apply(toLower, topics[i], []) : topics[i];
            if (t !== null && (typeof t !== 'string' || t.length !== 66
                               || !apply(test, HEX_RE, [t])))
            {
                fail(where + 'each topic must be null (any) or 0x and 64 '
                     + 'hex digits');
            }
            apply(push, info.topics, [t]);
        }
        const confirmations = opts.confirmations === undefined
                              ? 12 : opts.confirmations;
        if (!isInteger(confirmations) || confirmations < 0
            || confirmations > 128)
        {
            fail(where + 'confirmations must be a whole number, 0 to 128');
        }
        info.confirmations = confirmations;
        if (opts.chain !== undefined) {
            const chain = typeof opts.chain === 'string'
                          && hasOwn(CHAINS, opts.chain)
                          ? CHAINS[opts.chain] : opts.chain;
            if (!isInteger(chain) || chain < 1 || chain > 0xffffffff) {
                fail(where + 'chain must be a chain id or one of ethereum, '
                     + 'sepolia, holesky');
            }
            info.chain = chain;
        }
        let event = null;
        if (opts.event !== undefined) {
            event = eventOf(opts.event);
            if (info.topics.length > 0 && info.topics[0] !== null) {
                fail(where + 'with an event, its topic is the first: give '
                     + 'null there');
            }
            info.event = event.canonical;
        }
        return { info, event };
    }

    /*
     * runOnRadixEvent: an event's name and the global entity that emits
     * it (a component's, resource's or package's address), as provend
     * reads them from its Gateway.
     */
    const RADIX_ADDRESS_RE = /^[a-z][a-z0-9_]*1[02-9ac-hj-np-z]{6,}$/;
    const RADIX_EVENT_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

    function radixFilter(opts) {
        const where = 'runOnRadixEvent: ';
        if (typeof opts.emitter !== 'string' || opts.emitter.length > 90
            || !apply(test, RADIX_ADDRESS_RE, [opts.emitter]))
        {
            fail(where + 'emitter must be an address (Bech32m, like '
                 + '"component_rdx1..."), got ' + stringify(opts.emitter));
        }
        if (typeof opts.eventName !== 'string' || opts.eventName.length > 128
            || !apply(test, RADIX_EVENT_RE, [opts.eventName]))
        {
            fail(where + 'eventName must be an event\'s name (letters, '
                 + 'digits, _), got ' + stringify(opts.eventName));
        }
        return { emitter: opts.emitter, event: opts.eventName };
    }

    const handlerModule = freeze({
        run(fn) {
            return make('rpc', {}, fn, 'run');
        },
        runWithOptions(opts, fn) {
            opts = options(opts, 'runWithOptions');
            return make('rpc', { timeout: timeoutOf(opts, 'runWithOptions') },
                        fn, 'runWithOptions');
        },
        runOnHttp(opts, fn) {
            opts = options(opts, 'runOnHttp');
            const method = opts.method === undefined ? 'GET' : opts.method;
            if (typeof method !== 'string'
                || !METHODS.includes(method.toUpperCase()))
            {
                fail('runOnHttp: method must be one of ' + METHODS.join(' '));
            }
            if (typeof opts.path !== 'string' || opts.path.length > 256
                || !apply(test, PATH_RE, [opts.path]))
            {
                fail('runOnHttp: path must be like "/items/:id" (segments '
                     + 'of letters, digits and -._~, or :name), got '
                     + stringify(opts.path));
            }
            return make('http', { method: method.toUpperCase(),
                                  path: opts.path,
                                  timeout: timeoutOf(opts, 'runOnHttp') },
                        fn, 'runOnHttp');
        },
        runOnSchedule(cron, fn) {
            return make('schedule', { cron: checkCron(cron) }, fn,
                        'runOnSchedule');
        },
        runOnEthereumEvent(opts, fn) {
            opts = options(opts, 'runOnEthereumEvent');
            const { info, event } = ethereumFilter(opts);
            if (typeof fn !== 'function') {
                fail('runOnEthereumEvent: the handler must be a function');
            }
            /* the event's arguments decoded, beside the proved log */
            const withArgs = event === null ? fn : function (ev) {
                const copy = {};
                for (const k of keys(ev)) {
                    copy[k] = ev[k];
                }
                copy.event = event.name;
                /* a log of another layout under the same topic (ERC-20's
                 * and ERC-721's Transfer share it) still reaches fn: a
                 * throw here would hold the filter at it for good */
                try {
                    copy.args = decodeEvent(ev, event);
                } catch (e) {
                    copy.args = null;
                    copy.argsError = 'the log does not decode as '
                        + event.canonical;
                }
                return apply(fn, undefined, [copy]);
            };
            return make('ethereum', info, withArgs, 'runOnEthereumEvent');
        },
        runOnRadixEvent(opts, fn) {
            opts = options(opts, 'runOnRadixEvent');
            const info = radixFilter(opts);
            if (typeof fn !== 'function') {
                fail('runOnRadixEvent: the handler must be a function');
            }
            return make('radix', info, fn, 'runOnRadixEvent');
        },
    });

    /* console.*: formatted here, bounded, handed to the host as text. */
    function show(value) {
        if (typeof value === 'string') {
            return value;
        }
        try {
            const text = stringify(value);
            return text === undefined ? StringOf(value) : text;
        } catch (e) {
            try {
                return StringOf(value);
            } catch (e2) {
                return '[unprintable]';
            }
        }
    }

    function logger(level) {
        return function (...args) {
            const parts = [];
            for (const a of args) {
                apply(push, parts, [show(a)]);
            }
            let line = apply(join, parts, [' ']);
            if (line.length > limits.logLine) {
                line = apply(slice, line, [0, limits.logLine]) + '...';
            }
            hostCall(host.log, [level, line]);
        };
    }

    const consoleObject = freeze({
        log: logger('log'), info: logger('info'), warn: logger('warn'),
        error: logger('error'), debug: logger('debug'),
    });
    Object.defineProperty(globalThis, 'console', {
        value: consoleObject, writable: false, configurable: false,
    });

    /* What a handler returned, as status, header pairs and a body. */
    function isPlainObject(v) {
        return v !== null && typeof v === 'object' && !isArray(v)
               && (getProto(v) === ObjectProto || getProto(v) === null);
    }

    function isResponse(v) {
        if (!isPlainObject(v) || !isInteger(v.status)) {
            return false;
        }
        for (const k of keys(v)) {
            if (k !== 'status' && k !== 'headers' && k !== 'body') {
                return false;
            }
        }
        return true;
    }

    /*
     * Streamed bodies: an async iterable (an async generator, say) of
     * strings and byte arrays.  Its iterator waits here under a number
     * the host pulls chunks by (pull) or gives up on (cancel).
     */
    const asyncIteratorKey = Symbol.asyncIterator;
    const streams = new MapCtor();
    let nextStream = 1;

    function isStream(body) {
        return body !== null && typeof body === 'object' && !isArray(body)
               && !isView(body) && !(body instanceof ArrayBufferCtor)
               && typeof body[asyncIteratorKey] === 'function';
    }

    function bodyOf(body) {
        if (body === undefined || body === null) {
            return [null, null];
        }
        if (isStream(body)) {
            if (streams.size >= limits.streamsMax) {
                fail('too many streamed responses are open');
            }
            const iterator = body[asyncIteratorKey]();
            const id = nextStream++;
            apply(mapSetM, streams, [id, iterator]);
            return [id, 'application/octet-stream', true];
        }
        if (typeof body === 'string') {
            return [body, 'text/plain; charset=utf-8'];
        }
        if (body instanceof ArrayBufferCtor) {
            return [new U8(new U8(body)), 'application/octet-stream'];
        }
        if (isView(body)) {
            return [new U8(new U8(body.buffer, body.byteOffset,
                                  body.byteLength)),
                    'application/octet-stream'];
        }
        const json = stringify(body);
        if (json === undefined) {
            fail('the response body cannot be sent as JSON');
        }
        return [json, 'application/json'];
    }

    function respond(callId, value) {
        let status = 200, headers = [], body = value;

        if (isResponse(value)) {
            status = value.status;
            body = value.body;
            if (status < 100 || status > 599) {
                fail('status ' + status + ' is not an HTTP status');
            }
            if (value.headers !== undefined) {
                if (!isPlainObject(value.headers)) {
                    fail('headers must be an object of names to strings');
                }
                for (const name of keys(value.headers)) {
                    apply(push, headers,
                          [[StringOf(name), StringOf(value.headers[name])]]);
                }
            }
        }

        const [out, type, stream] = bodyOf(body);
        const taken = hostCall(host.settle, [callId, true, status,
                                             stringify(headers), out, type,
                                             stream === true]);
        /* a call that timed out meanwhile: nobody will read the stream */
        if (stream === true && taken !== true) {
            cancel(out);
        }
    }

    function endStream(id) {
        apply(mapDeleteM, streams, [id]);
    }

    /* The next chunk of stream id: settled as "chunk" or "end". */
    function pull(callId, id) {
        const iterator = apply(mapGetM, streams, [id]);
        if (iterator === undefined) {
            failed(callId, new ErrorCtor('the stream is over'));
            return;
        }
        let step;
        try {
            step = apply(iterator.next, iterator, []);
        } catch (e) {
            endStream(id);
            failed(callId, e);
            return;
        }
        apply(then, apply(resolve, PromiseCtor, [step]), [
            (r) => {
                try {
                    if (r === null || typeof r !== 'object') {
                        fail('a stream step must be {value, done}');
                    }
                    if (r.done) {
                        endStream(id);
                        hostCall(host.settle, [callId, true, 0, '[]', null,
                                               'end']);
                        return;
                    }
                    const v = r.value;
                    let out;
                    if (typeof v === 'string') {
                        out = v;
                    } else if (v instanceof U8) {
                        out = new U8(v);
                    } else {
                        fail('a streamed chunk is a string or a Uint8Array');
                    }
                    hostCall(host.settle, [callId, true, 0, '[]', out,
                                           'chunk']);
                } catch (e) {
                    endStream(id);
                    failed(callId, e);
                }
            },
            (e) => {
                endStream(id);
                failed(callId, e);
            },
        ]);
    }

    /* Nobody reads stream id any more: its iterator may clean up. */
    function cancel(id) {
        const iterator = apply(mapGetM, streams, [id]);
        if (iterator === undefined) {
            return;
        }
        endStream(id);
        try {
            if (typeof iterator.return === 'function') {
                apply(then, apply(resolve, PromiseCtor,
                                  [apply(iterator.return, iterator, [])]),
                      [undefined, () => {}]);
            }
        } catch (e) {
            /* its own business */
        }
    }

    function failed(callId, error) {
        let message, stack;
        try {
            message = error instanceof Error
                ? StringOf(error.name) + ': ' + StringOf(error.message)
                : 'thrown: ' + show(error);
            stack = error instanceof Error && typeof error.stack === 'string'
                ? error.stack : '';
        } catch (e) {
            message = 'an error that cannot be printed';
            stack = '';
        }
        hostCall(host.settle, [callId, false, 0,
                               apply(slice, message, [0, 4096]),
                               apply(slice, stack, [0, 16384]), null]);
    }

    /* run, runWithOptions, runOnSchedule: the value itself, as JSON */
    function respondRaw(callId, value) {
        const json = value === undefined ? 'null' : stringify(value);
        if (json === undefined) {
            fail('the result cannot be sent as JSON');
        }
        hostCall(host.settle, [callId, true, 0, '[]', json, 'raw']);
    }

    function settleWith(callId, result, raw) {
        apply(then, apply(resolve, PromiseCtor, [result]), [
            (value) => {
                try {
                    (raw ? respondRaw : respond)(callId, value);
                } catch (e) {
                    failed(callId, e);
                }
            },
            (error) => failed(callId, error),
        ]);
    }

    /*
     * Storage: requests go to the host as JSON text plus a list of byte
     * arrays ({"$b": i} marks where each goes); answers come back the same
     * way, so no host object ever reaches app code.
     */
    const waiting = new MapCtor();
    let nextRequest = 1;

    function encodeArgs(args) {
        const bytes = [];
        const text = stringify(args, (k, v) => {
            if (v instanceof U8) {
                apply(push, bytes, [new U8(v)]);
                return { $b: bytes.length - 1 };
            }
            return v;
        });
        return [text, bytes];
    }

    /*
     * JSON text from the host back to values, markers to byte arrays.
     * Own properties only: app code may have put a $b on Object.prototype.
     * Data never holds a "$b" key of its own: rows travel as arrays.
     */
    function decodeAnswer(text, bytes) {
        return parse(text, (k, v) => (v !== null && typeof v === 'object'
                                      && hasOwn(v, '$b')
                                      && typeof v.$b === 'number'
                                      ? bytes[v.$b] : v));
    }

    function request(op, args) {
        return new PromiseCtor((resolve, reject) => {
            const id = nextRequest++;
            apply(mapSetM, waiting, [id, { resolve, reject }]);
            args.op = op;
            const [text, bytes] = encodeArgs(args);
            hostCall(host.storage, [id, text, bytes]);
        });
    }

    function storageError(code, message) {
        const e = new ErrorCtor(message);
        defineProperty(e, 'code', { value: code, enumerable: true });
        return e;
    }

    function resume(id, ok, text, list) {
        const w = apply(mapGetM, waiting, [id]);
        if (w === undefined) {
            return;
        }
        apply(mapDeleteM, waiting, [id]);
        if (!ok) {
            const e = parse(text);
            w.reject(storageError(StringOf(e.code), StringOf(e.message)));
            return;
        }
        const bytes = [];
        for (let i = 0; i < list.length; i++) {
            apply(push, bytes, [list[i]]);
        }
        w.resolve(decodeAnswer(text, bytes));
    }

    const NAME_RE = /^[a-z0-9_-]{1,64}$/;

    function checkName(name, what) {
        if (typeof name !== 'string' || !apply(test, NAME_RE, [name])) {
            fail(what + ' names are 1..64 of a-z 0-9 _ -');
        }
    }

    function keyOf(key) {
        if (typeof key === 'string' || key instanceof U8) {
            return key;
        }
        fail('keys are strings or Uint8Arrays');
    }

    /*
     * NFT scopes: an NFT is {contract: '0x<40 hex>', token} (token: a
     * BigInt, a safe integer, or its decimal or 0x text); the store's
     * options say where the contract keeps its owners (ownersSlot, 2 as
     * OpenZeppelin's ERC721) and how deep a transfer must be to count
     * (confirmations, 12).  provend opens it only for a call whose session
     * linked the owner's address (proved at that block).  A Radix
     * non-fungible is {resource: 'resource_...', id: '#1#'}, opened for a
     * call whose session linked (LinkRadix) the account that holds it.
     */
    const CONTRACT_RE = /^0x[0-9a-fA-F]{40}$/;
    const RESOURCE_RE = /^resource_[a-z0-9_]+1[02-9ac-hj-np-z]{6,}$/;
    const NF_ID_RE = /^(#(0|[1-9][0-9]{0,19})#|<[A-Za-z0-9_]{1,64}>|\[([0-9a-f]{2}){1,64}\]|\{[0-9a-f]{16}(-[0-9a-f]{16}){3}\})$/;
    const DECIMAL_RE = /^(0|[1-9][0-9]{0,77})$/;
    const HEX_TOKEN_RE = /^0x[0-9a-fA-F]{1,64}$/;
    const MAX_TOKEN = (1n << 256n) - 1n;

    function nftOptions(options) {
        const o = options === undefined ? {} : options;
        if (o === null || typeof o !== 'object') {
            fail('NFT store options are {ownersSlot?, confirmations?}');
        }
        const out = {};
        const slot = o.ownersSlot;
        if (slot !== undefined) {
            if (!(isInteger(slot) && slot >= 0)
                && !(typeof slot === 'string' && slot.length === 66
                     && apply(test, HEX_RE, [apply(toLower, slot, [])]))) {
                fail('ownersSlot is a slot number or 0x and 64 hex digits');
            }
            out.owners_slot = typeof slot === 'string'
                ? apply(toLower, slot, []) : slot;
        }
        const conf = o.confirmations;
        if (conf !== undefined) {
            if (!isInteger(conf) || conf < 0 || conf > 128) {
                fail('confirmations is 0 to 128');
            }
            out.confirmations = conf;
        }
        return out;
    }

    function nftOf(nft, options) {
        if (nft === null || typeof nft !== 'object') {
            fail('an NFT is {contract: "0x<40 hex digits>", token} or, on '
                 + 'Radix, {resource, id}');
        }
        if (nft.resource !== undefined) {
            if (typeof nft.resource !== 'string' || nft.resource.length > 90
                || !apply(test, RESOURCE_RE, [nft.resource])) {
                fail('a Radix NFT\'s resource is its address, '
                     + '"resource_..."');
            }
            if (typeof nft.id !== 'string' || nft.id.length > 130
                || !apply(test, NF_ID_RE, [nft.id])) {
                fail('a Radix NFT\'s id is its non-fungible id: "#1#", '
                     + '"<name>", "[hex]" or "{ruid}"');
            }
            if (options.owners_slot !== undefined
                || options.confirmations !== undefined) {
                fail('ownersSlot and confirmations are an Ethereum NFT\'s');
            }
            return { resource: nft.resource, token: nft.id };
        }
        const contract = nft.contract;
        const token = nft.token;
        if (typeof contract !== 'string'
            || !apply(test, CONTRACT_RE, [contract])) {
            fail('an NFT\'s contract is 0x and 40 hex digits');
        }
        let id = null;
        if (typeof token === 'bigint') {
            id = token;
        } else if (typeof token === 'number' && isInteger(token)
                   && token >= 0 && token <= 9007199254740991) {
            id = BigIntOf(token);
        } else if (typeof token === 'string'
                   && (apply(test, DECIMAL_RE, [token])
                       || apply(test, HEX_TOKEN_RE, [token]))) {
            id = BigIntOf(token);
        }
        if (id === null || id < 0n || id > MAX_TOKEN) {
            fail('an NFT\'s token is its id: a BigInt, a safe integer, or '
                 + 'its decimal or 0x text, below 2^256');
        }
        return { contract: apply(toLower, contract, []), token: StringOf(id),
                 ...options };
    }

    function kvStore(type, name, scope, options) {
        checkName(name, 'store');
        if (scope === 'NFT') {
            /* each method takes the NFT first: (nft, key, ...); a bad
               one rejects, as every storage error does */
            const opts = nftOptions(options);
            const of = (nft) => kvScoped(type, { store: name, type,
                                                 nft: nftOf(nft, opts) });
            const store = {
                get: async (nft, key) => of(nft).get(key),
                entry: async (nft, key) => of(nft).entry(key),
                delete: async (nft, key) => of(nft).delete(key),
                keys: async (nft, o) => of(nft).keys(o),
            };
            if (type === 'key') {
                store.generate = async (nft, key) => of(nft).generate(key);
                store.sign = async (nft, key, message) => of(nft).sign(
                    key, message);
            } else {
                store.set = async (nft, key, value, o) => of(nft).set(
                    key, value, o);
            }
            return freeze(store);
        }
        /* personal: the host scopes it to the caller's identity */
        return kvScoped(type, scope === 'personal'
                        ? { store: name, type, personal: true }
                        : { store: name, type });
    }

    function kvScoped(type, base) {
        const store = {
            async get(key) {
                return (await store.entry(key)).value;
            },
            /* {value, revision}: revision 0 when there is no value */
            async entry(key) {
                const r = await request('kv.get', { ...base, key: keyOf(key) });
                const v = type === 'key' ? r.public_key : r.value;
                return { value: v === null || v === undefined ? undefined : v,
                         revision: r.revision };
            },
            async delete(key) {
                const r = await request('kv.delete',
                                        { ...base, key: keyOf(key) });
                return Boolean(r && r.deleted);
            },
            async keys(options = {}) {
                const out = [];
                let cursor = null;
                do {
                    const args = { ...base, limit: 1000 };
                    if (options.prefix !== undefined) {
                        args.prefix = keyOf(options.prefix);
                    }
                    if (cursor !== null) {
                        args.cursor = cursor;
                    }
                    const r = await request('kv.keys', args);
                    for (const k of r.keys) {
                        apply(push, out, [k]);
                    }
                    cursor = r.cursor;
                } while (cursor !== null && out.length < limits.keysMax);
                return out;
            },
        };
        if (type === 'key') {
            store.generate = async (key) => {
                await request('kv.set', { ...base, key: keyOf(key) });
                return store.get(key);
            };
            store.sign = async (key, message) => {
                const m = typeof message === 'string'
                    ? message : message instanceof U8 ? message : null;
                if (m === null) {
                    fail('sign takes a string or a Uint8Array');
                }
                const r = await request('kv.sign', { ...base, key: keyOf(key),
                                                     message: m });
                return r.signature;
            };
        } else {
            /* options.ifRevision: only if the key is at that revision
               (0: only if it has no value); else an error, code
               "revision_mismatch" */
            store.set = async (key, value, options = {}) => {
                if (type === 'string' ? typeof value !== 'string'
                                      : !(value instanceof U8))
                {
                    fail(type === 'string'
                         ? 'a store takes string values'
                         : 'a bytes store takes Uint8Array values');
                }
                const args = { ...base, key: keyOf(key), value };
                if (options.ifRevision !== undefined) {
                    if (!isInteger(options.ifRevision)
                        || options.ifRevision < 0)
                    {
                        fail('ifRevision is a revision number');
                    }
                    args.if_revision = options.ifRevision;
                }
                const r = await request('kv.set', args);
                return r.revision;
            };
        }
        return freeze(store);
    }

    const kvModule = freeze({
        getApplicationStore: (n) => kvStore('string', n, 'app'),
        getApplicationBytesStore: (n) => kvStore('bytes', n, 'app'),
        getApplicationKeyStore: (n) => kvStore('key', n, 'app'),
        getPersonalStore: (n) => kvStore('string', n, 'personal'),
        getPersonalBytesStore: (n) => kvStore('bytes', n, 'personal'),
        getPersonalKeyStore: (n) => kvStore('key', n, 'personal'),
        getNftStore: (n, o) => kvStore('string', n, 'NFT', o),
        getNftBytesStore: (n, o) => kvStore('bytes', n, 'NFT', o),
        getNftKeyStore: (n, o) => kvStore('key', n, 'NFT', o),
    });

    function sqlParams(params) {
        if (params === undefined) {
            return [];
        }
        if (!isArray(params)) {
            fail('SQL parameters are an array');
        }
        const out = [];
        for (const p of params) {
            apply(push, out, [typeof p === 'boolean' ? (p ? 1 : 0)
                              : p === undefined ? null : p]);
        }
        return out;
    }

    function sqlDb(name, scope, options) {
        checkName(name, 'database');
        const migrations = [];
        let migrated = null;
        const opts = scope === 'NFT' ? nftOptions(options) : null;
        const dbOf = (nft) => (scope === 'personal'
            ? { db: name, personal: true }
            : scope === 'NFT' ? { db: name, nft: nftOf(nft, opts) }
                              : { db: name });

        function ready(db) {
            if (scope !== 'app' && migrations.length > 0) {
                /* one database per caller or NFT: provend applies what is
                   missing */
                return request('sql.migrate', { ...db, migrations });
            }
            if (migrated === null && migrations.length > 0) {
                migrated = request('sql.migrate', { ...db, migrations });
            }
            return migrated;
        }

        async function execute(db, sql, params) {
            await ready(db);
            const r = await request('sql.execute',
                                    { ...db, sql, params: sqlParams(params) });
            return { changes: r.changes,
                     lastInsertRowid: r.last_insert_rowid };
        }

        async function query(db, sql, params) {
            await ready(db);
            const rows = [];
            let cursor = null;
            do {
                const args = { ...db, sql, params: sqlParams(params) };
                if (cursor !== null) {
                    args.cursor = cursor;
                }
                const r = await request('sql.query', args);
                for (const row of r.rows) {
                    const o = {};
                    for (let i = 0; i < r.columns.length; i++) {
                        o[r.columns[i]] = row[i];
                    }
                    apply(push, rows, [o]);
                }
                cursor = r.cursor;
            } while (cursor !== null && rows.length < limits.rowsMax);
            return rows;
        }

        const api = {
            migrate(sql) {
                if (typeof sql !== 'string') {
                    fail('a migration is SQL text');
                }
                if (migrated !== null) {
                    fail('migrations are declared before the first query');
                }
                apply(push, migrations, [sql]);
                return api;
            },
            /* an NFT's database: (nft, sql, params) */
            execute: scope === 'NFT'
                ? async (nft, sql, params) => execute(dbOf(nft), sql, params)
                : (sql, params) => execute(dbOf(), sql, params),
            query: scope === 'NFT'
                ? async (nft, sql, params) => query(dbOf(nft), sql, params)
                : (sql, params) => query(dbOf(), sql, params),
        };
        return api;
    }

    const sqlModule = freeze({
        getApplicationDb: (n) => sqlDb(n, 'app'),
        getPersonalDb: (n) => sqlDb(n, 'personal'),
        getNftDb: (n, o) => sqlDb(n, 'NFT', o),
    });

    /*
     * Who the call runs for: the identity a session proved and the
     * accounts it linked (LinkEthereum, LinkRadix), as the call began;
     * provend answers from the call's grant.  A call no session made (an
     * HTTP trigger, a schedule, an event): null and no accounts.
     */
    function links() {
        return request('session.links', {});
    }

    const sessionModule = freeze({
        async getCurrentIdentity() {
            return (await links()).identity;
        },
        async getCurrentAccounts() {
            const r = await links();
            return freeze({ ethereum: freeze(r.ethereum),
                            radix: freeze(r.radix) });
        },
    });

    return freeze({
        modules: freeze({ '@proven-network/handler': handlerModule,
                          '@proven-network/kv': kvModule,
                          '@proven-network/sql': sqlModule,
                          '@proven-network/session': sessionModule }),

        resume,
        pull,
        cancel,

        /* What import() of anything gives: an error of the context. */
        importRefused(specifier) {
            return new TypeErrorCtor('cannot import("' + specifier + '"): '
                                     + 'dynamic import() is not available '
                                     + 'to apps; use a static import');
        },

        /*
         * An export: a handler's description as JSON, or null.  Written
         * field by field from primitives (JSON.stringify of an object
         * would consult a toJSON app code may have put on Object.prototype).
         */
        describe(value) {
            if ((typeof value !== 'function')) {
                return null;
            }
            const d = apply(mapGet, described, [value]);
            if (d === undefined) {
                return null;
            }
            let text = '{"kind":' + stringify(StringOf(d.info.kind));
            for (const k of ['method', 'path', 'cron', 'address', 'event',
                             'emitter']) {
                if (typeof d.info[k] === 'string') {
                    text += ',"' + k + '":' + stringify(d.info[k]);
                }
            }
            for (const k of ['timeout', 'confirmations', 'chain']) {
                if (isInteger(d.info[k])) {
                    text += ',"' + k + '":' + StringOf(d.info[k]);
                }
            }
            if (isArray(d.info.topics)) {
                const topics = [];
                for (let i = 0; i < d.info.topics.length; i++) {
                    apply(push, topics, [d.info.topics[i] === null ? 'null'
                                         : stringify(d.info.topics[i])]);
                }
                text += ',"topics":[' + apply(join, topics, [',']) + ']';
            }
            return text + '}';
        },

        bind(index, value) {
            bound[index] = apply(mapGet, described, [value]).fn;
        },

        /* request: JSON text; body: a string, a byte array or null;
         * spread: request is the array of the handler's arguments. */
        invoke(callId, index, request, body, raw, spread) {
            let result;
            try {
                const req = parse(request);
                if (!raw) {
                    req.body = body === null ? undefined : body;
                }
                result = apply(bound[index], undefined, spread ? req : [req]);
            } catch (e) {
                failed(callId, e);
                return;
            }
            settleWith(callId, result, raw);
        },
    });
})`;

const PACKAGE_SPECIFIER = /^@proven-network\/[a-z]+$/;

// import() and import.meta are refused before a module is compiled: each
// calls into Node's own loader code, which runs on the app's stack, so an
// app that fills its stack first gets a RangeError of the host's realm
// out of it (and from it the host's Function).  A parser, not a pattern:
// the words may appear in strings and comments.
function refuseHostHooks(file, source) {
    let ast;
    try {
        ast = parseModule(source, { ecmaVersion: 'latest',
                                    sourceType: 'module', locations: true });
    } catch (e) {
        throw new Error(`${file}: ${e.message}`);
    }
    const stack = [ast];
    while (stack.length > 0) {
        const node = stack.pop();
        if (node.type === 'ImportExpression'
            || (node.type === 'MetaProperty' && node.meta.name === 'import'))
        {
            throw new Error(`${file}:${node.loc.start.line}: `
                            + `${node.type === 'ImportExpression'
                                ? 'import()' : 'import.meta'} is not `
                            + 'available to apps; use a static import');
        }
        for (const key of Object.keys(node)) {
            const v = node[key];
            if (Array.isArray(v)) {
                for (const item of v) {
                    if (item !== null && typeof item.type === 'string') {
                        stack.push(item);
                    }
                }
            } else if (v !== null && typeof v === 'object'
                       && typeof v.type === 'string') {
                stack.push(v);
            }
        }
    }
}

function contextOptions(name) {
    return {
        name,
        codeGeneration: { strings: false, wasm: false },
    };
}

// The handlers of a loaded package, in a stable order: modules by path,
// exports by name.
export class Sandbox {
    // modules: { "path/in/package.js": "source" }; host: { settle, log }
    constructor(modules, host, options = {}) {
        this.sources = modules;
        this.host = host;
        this.timeoutMax = options.timeoutMax || 300000;
        // A prototype-less sandbox object: with {} the global's lookups
        // would fall through to the host's Object.prototype, and
        // globalThis.constructor would be the host's Object.
        this.context = vm.createContext(Object.create(null), contextOptions(
            options.name || 'app'));
        this.bytesInContext = vm.runInContext('Uint8Array', this.context);
        this.api = vm.runInContext(SETUP_SOURCE, this.context)(
            {
                settle: (...args) => this.settle(...args),
                log: (level, line) => this.log(level, line),
                storage: (id, text, bytes) => this.storage(id, text, bytes),
            },
            { timeoutMax: this.timeoutMax, logLine: LOG_LINE_MAX,
              keysMax: 10000, rowsMax: 10000, streamsMax: 256 });
        this.handlers = [];
        this.logs = null;
        this.logBytes = 0;
    }

    // Returns whether the call was still waiting (a primitive, for the
    // context).
    settle(callId, ok, status, a, b, type, stream) {
        try {
            if (typeof callId !== 'number') {
                return false;
            }
            let body = b;
            if (ok && stream === true) {
                body = Number(b);
            } else if (ok && type === 'raw') {
                body = String(b);
            } else if (ok && b !== null && typeof b !== 'string') {
                // b is a byte array the setup code made; copy it with the
                // host's constructor, which reads it without calling into
                // the context.
                body = types.isUint8Array(b) && !types.isProxy(b)
                    ? Buffer.from(new Uint8Array(b)) : null;
            }
            const logs = this.logs;
            this.logs = null;
            this.logBytes = 0;
            return this.host.settle(callId, ok ? {
                status, headers: JSON.parse(String(a)), body,
                type: typeof type === 'string' ? type : null,
                stream: stream === true, logs,
            } : { error: String(a), stack: String(b), logs }) === true;
        } catch (e) {
            this.host.settle(callId, { error: `runtime: ${e.message}`,
                                       stack: '', logs: null });
            return false;
        }
    }

    // A storage request from app code: JSON text and byte arrays the setup
    // code made; copied out with the host's own constructors.
    storage(id, text, bytes) {
        try {
            const list = [];
            for (let i = 0; i < bytes.length; i++) {
                const b = bytes[i];
                list.push(types.isUint8Array(b) && !types.isProxy(b)
                    ? new Uint8Array(b) : new Uint8Array(0));
            }
            const args = JSON.parse(String(text), (k, v) => (
                v !== null && typeof v === 'object' && Object.hasOwn(v, '$b')
                && typeof v.$b === 'number' ? list[v.$b] : v));
            if (this.host.storage === undefined) {
                this.resume(id, false, { code: 'unavailable', message:
                    'storage is unavailable: the runtime runs without '
                    + 'provend' });
                return;
            }
            this.host.storage(id, args);
        } catch (e) {
            this.resume(id, false, { code: 'bad_request',
                                     message: `runtime: ${e.message}` });
        }
    }

    // The answer to storage request id: result (a JS value, bytes as
    // Uint8Array) or error {code, message}, handed to the context as text
    // and byte arrays made in the context.
    resume(id, ok, value) {
        const list = [];
        const text = JSON.stringify(value === undefined ? null : value,
            (k, v) => {
                if (v instanceof Uint8Array) {
                    const copy = new this.bytesInContext(v.length);
                    Uint8Array.prototype.set.call(copy, v);
                    list.push(copy);
                    return { $b: list.length - 1 };
                }
                return typeof v === 'bigint' ? Number(v) : v;
            });
        try {
            this.api.resume(id, ok, text, list);
        } catch (e) {
            // app code that broke its own promises; nothing of it may
            // unwind into the storage line
        }
    }

    log(level, line) {
        if (typeof line !== 'string') {
            return;
        }
        this.host.log?.(String(level), line);
        if (this.logs === null) {
            this.logs = [];
        }
        if (this.logBytes + line.length <= LOG_CALL_MAX) {
            this.logs.push([String(level), line]);
            this.logBytes += line.length;
        }
    }

    link(specifier, referencing) {
        if (PACKAGE_SPECIFIER.test(specifier)) {
            const m = this.apiModules.get(specifier);
            if (m === undefined) {
                throw new Error(`cannot import "${specifier}": no such `
                                + 'Proven module');
            }
            return m;
        }
        if (!specifier.startsWith('./') && !specifier.startsWith('../')) {
            throw new Error(`cannot import "${specifier}" from `
                            + `${referencing.identifier}: only relative `
                            + 'imports inside the package and '
                            + '@proven-network/* are allowed');
        }
        const from = path.posix.dirname(referencing.identifier);
        const target = path.posix.normalize(path.posix.join(from,
                                                            specifier));
        const m = this.modules.get(target);
        if (m === undefined) {
            throw new Error(`cannot import "${specifier}" from `
                            + `${referencing.identifier}: ${target} is not `
                            + 'in the package');
        }
        return m;
    }

    // Compiles, links and runs every module; returns the handlers found
    // among their exports (the package manifest's handler list).
    async load() {
        this.apiModules = new Map();
        for (const [name, exportsObject] of Object.entries(
            this.api.modules))
        {
            const names = Object.keys(exportsObject);
            this.apiModules.set(name, new vm.SyntheticModule(names,
                function () {
                    for (const n of names) {
                        this.setExport(n, exportsObject[n]);
                    }
                }, { context: this.context, identifier: name }));
        }

        this.modules = new Map();
        const paths = Object.keys(this.sources).sort();
        for (const p of paths) {
            refuseHostHooks(p, this.sources[p]);
            this.modules.set(p, new vm.SourceTextModule(this.sources[p], {
                context: this.context,
                identifier: p,
                // Without this callback import() rejects with an error of
                // the host's realm, whose constructor chain leads to the
                // host's Function: the refusal must be made in the context.
                importModuleDynamically: (specifier) => {
                    throw this.api.importRefused(String(specifier));
                },
            }));
        }

        for (const p of paths) {
            const m = this.modules.get(p);
            if (m.status === 'unlinked') {
                await m.link((s, r) => this.link(s, r));
            }
        }
        for (const p of paths) {
            await this.modules.get(p).evaluate();
        }

        this.handlers = [];
        for (const p of paths) {
            const ns = this.modules.get(p).namespace;
            for (const name of Object.keys(ns).sort()) {
                const info = this.api.describe(ns[name]);
                if (info === null) {
                    continue;
                }
                const index = this.handlers.length;
                this.api.bind(index, ns[name]);
                const parsed = JSON.parse(info);
                this.handlers.push({ module: p, name, ...parsed });
            }
        }
        return this.handlers;
    }

    // The next chunk of a streamed body: host.settle(callId, result) with
    // type "chunk" (body a string or bytes) or "end".
    pull(callId, stream) {
        this.logs = null;
        this.logBytes = 0;
        this.api.pull(callId, stream);
    }

    cancel(stream) {
        this.api.cancel(stream);
    }

    // Starts a call; host.settle(callId, result) follows, at once or later.
    invoke(callId, index, request, body, raw = false, spread = false) {
        let inContext = null;
        if (typeof body === 'string') {
            inContext = body;
        } else if (body != null) {
            inContext = new this.bytesInContext(body.length);
            Uint8Array.prototype.set.call(inContext, body);
        }
        this.logs = null;
        this.logBytes = 0;
        this.api.invoke(callId, index, JSON.stringify(request), inContext,
                        raw, spread);
    }
}
