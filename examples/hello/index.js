// examples/hello: a counter in a KV store and a list in a SQL database,
// served over HTTP.  Deploy it to a local node (make run) with
//
//   proven app deploy examples/hello --app hello
//
// and call it:
//
//   curl http://127.0.0.1:8080/app/hello/count            # {"count":0}
//   curl -X POST http://127.0.0.1:8080/app/hello/count    # {"count":1}
//   curl -X POST -d 'buy milk' http://127.0.0.1:8080/app/hello/items
//   curl http://127.0.0.1:8080/app/hello/items            # [{"id":1,...}]
//   curl http://127.0.0.1:8080/app/hello/items/1
//   curl http://127.0.0.1:8080/app/hello/heartbeat        # set each minute

import { run, runOnHttp, runOnSchedule } from '@proven-network/handler';
import { getApplicationStore, getPersonalStore } from '@proven-network/kv';

import { addItem, getItem, listItems } from './items.js';

const counters = getApplicationStore('counters');

export const readCount = runOnHttp({ path: '/count' }, async () => ({
    count: Number((await counters.get('visits')) || 0),
}));

// Compare-and-set, so concurrent calls never lose an increment.
export const increment = runOnHttp({ path: '/count', method: 'POST' },
    async () => {
        for (let attempt = 0; attempt < 100; attempt++) {
            const { value, revision } = await counters.entry('visits');
            const next = Number(value || 0) + 1;
            try {
                await counters.set('visits', String(next),
                                   { ifRevision: revision });
                return { count: next };
            } catch (e) {
                if (e.code !== 'revision_mismatch') {
                    throw e;
                }
            }
        }
        return { status: 503, body: { error: 'too busy, try again' } };
    });

export const list = runOnHttp({ path: '/items' }, () => listItems());

export const add = runOnHttp({ path: '/items', method: 'POST' },
    async (req) => {
        const text = typeof req.body === 'string' ? req.body.trim() : '';
        if (text.length === 0 || text.length > 1000) {
            return { status: 400,
                     body: { error: 'send the item as 1..1000 characters' } };
        }
        return { status: 201, body: await addItem(text) };
    });

export const one = runOnHttp({ path: '/items/:id' }, async (req) => {
    const item = await getItem(Number(req.pathParameters.id));
    return item ? item : { status: 404, body: { error: 'no such item' } };
});

// provend fires this at the start of every minute (UTC cron).
export const beat = runOnSchedule('* * * * *', async ({ scheduledAt }) => {
    await counters.set('heartbeat', new Date(scheduledAt).toISOString());
});

export const heartbeat = runOnHttp({ path: '/heartbeat' }, async () => ({
    last: (await counters.get('heartbeat')) || null,
}));

// Called over signed RPC (Execute "index.js#sum" with args [a, b]).
export const sum = run((a, b) => a + b);

// Each identified user's own note: personal storage is scoped to the app
// and the identity the caller's session proved (Identify).
const notes = getPersonalStore('notes');

export const saveNote = run(async (text) => {
    await notes.set('note', String(text));
    return String(text);
});

export const readNote = run(async () => (await notes.get('note')) ?? null);
