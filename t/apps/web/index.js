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
