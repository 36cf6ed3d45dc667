// The application t/003-app.t deploys: one route per behaviour it checks.
import { runOnHttp } from '@proven-network/handler';
import { shout } from './lib/shout.js';

export const item = runOnHttp({ path: '/items/:id' }, (req) => ({
    id: req.pathParameters.id,
    query: req.queryParameters,
}));

export const create = runOnHttp({ path: '/items', method: 'POST' },
    (req) => ({
        status: 201,
        headers: { 'x-created': shout(req.headers['x-name'] || 'none') },
        body: { received: req.body },
    }));

export const echo = runOnHttp({ path: '/echo', method: 'PUT' },
    (req) => req.body);

export const root = runOnHttp({ path: '/' }, () => JSON.stringify('root'));

export const text = runOnHttp({ path: '/text' }, () => 'plain');

export const fails = runOnHttp({ path: '/fails' }, () => {
    throw new Error('the handler broke');
});

export const slow = runOnHttp({ path: '/slow', timeout: 300 },
    () => new Promise(() => {}));

export const hog = runOnHttp({ path: '/hog', timeout: 20000 }, () => {
    const keep = [];
    for (;;) {
        keep.push(new Array(1024 * 1024).fill(keep.length));
    }
});

export const badHeaders = runOnHttp({ path: '/bad-headers' }, () => ({
    status: 200,
    headers: { 'x-ok': 'yes', 'x-bad': 'a\r\nInjected: 1',
               'transfer-encoding': 'chunked' },
    body: 'headers filtered',
}));

// What would reach past its app on an origin apps share.
export const reaching = runOnHttp({ path: '/reaching' }, () => ({
    status: 200,
    headers: { 'set-cookie': 'session=app; Path=/',
               'service-worker-allowed': '/', 'x-ok': 'yes' },
    body: 'reaching',
}));

// Holds its thread for ?ms= milliseconds (at most 200): load for the pool.
export const spin = runOnHttp({ path: '/spin' }, (req) => {
    const ms = Math.min(Number(req.queryParameters.ms) || 50, 200);
    const until = Date.now() + ms;
    let turns = 0;
    while (Date.now() < until) {
        turns++;
    }
    return { spun: turns > 0 };
});

// A streamed body: ?n= lines, one chunk each.
export const stream = runOnHttp({ path: '/stream/:n' }, (req) => ({
    status: 200,
    headers: { 'content-type': 'text/plain' },
    body: (async function* () {
        for (let i = 0; i < Number(req.pathParameters.n); i++) {
            yield `${i}\n`;
        }
    })(),
}));

// A stream that breaks after its first chunk.
export const streamBreaks = runOnHttp({ path: '/stream-breaks' },
    async function* () {
        yield 'one\n';
        throw new Error('broke mid-stream');
    });

// ?n= chunks of 64 KiB: more than socket buffers hold, for a slow reader.
export const streamBig = runOnHttp({ path: '/stream-big/:n' }, (req) => ({
    status: 200,
    headers: { 'content-type': 'application/octet-stream' },
    body: (async function* () {
        const chunk = new Uint8Array(65536).fill(0x78);
        for (let i = 0; i < Number(req.pathParameters.n); i++) {
            yield chunk;
        }
    })(),
}));
