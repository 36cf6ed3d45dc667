// examples/web in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core): the page opens an attested session to the node
// tests/rpc.sh started and calls examples/hello over HTTP and WebSocket.
//   PROVEN_URL  the node

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { chromium } from '../../sdk/node_modules/playwright-core/index.mjs';

test('the page checks the attestation and calls the app', async () => {
    const browser = await chromium.launch({
        executablePath: process.env.PROVEN_CHROMIUM || '/usr/bin/chromium',
        args: ['--no-sandbox'] });
    try {
        const page = await browser.newPage();
        const errors = [];
        page.on('pageerror', (e) => errors.push(e.message));
        await page.goto(`${process.env.PROVEN_URL}/web/`);
        await page.waitForSelector('body[data-state]', { timeout: 20000 });
        const text = await page.textContent('#log');
        assert.equal(await page.getAttribute('body', 'data-state'), 'done',
                     text);
        assert.match(text, /session [0-9a-f-]{36}: the document checks out/);
        assert.match(text, /WhoAmI: anonymous from http:\/\/127\.0\.0\.1:\d+/);
        assert.match(text, /sum over HTTP: 42/);
        assert.match(text, /sum over WebSocket: 3/);
        assert.match(text, /identified: identified/);
        assert.match(text, /note: from the browser/);
        assert.deepEqual(errors, []);
    } finally {
        await browser.close();
    }
});

test('behind an attacking relay the page refuses the session', async () => {
    const { startRelay } = await import('../../tests/rpc/relay.mjs');
    const relay = await startRelay(process.env.PROVEN_URL);
    const browser = await chromium.launch({
        executablePath: process.env.PROVEN_CHROMIUM || '/usr/bin/chromium',
        args: ['--no-sandbox'] });
    try {
        for (const mode of ['hijack', 'key-swap']) {
            relay.mode = mode;
            const page = await browser.newPage();
            await page.goto(`${relay.url}/web/`);
            await page.waitForSelector('body[data-state]', { timeout: 20000 });
            const text = await page.textContent('#log');
            assert.equal(await page.getAttribute('body', 'data-state'),
                         'error', text);
            assert.match(text, /does not bind a session to this client's key/);
            assert.doesNotMatch(text, /sum over HTTP/);
            await page.close();
        }
    } finally {
        await browser.close();
        await relay.close();
    }
});

test('an app\'s service worker and cookies reach no other origin',
     async () => {
    const { execFileSync } = await import('node:child_process');
    const base = process.env.PROVEN_URL;
    const port = new URL(base).port;
    execFileSync(`${process.env.PROVEN_BUILD}/bin/proven`,
                 ['app', 'deploy', new URL('../../tests/fixtures/sw-app',
                                           import.meta.url).pathname,
                  '--app', 'sw'], { stdio: 'ignore' });

    /* on the shared origin: sandboxed, and what reaches past it dropped */
    const shared = await fetch(`${base}/app/sw/`);
    assert.equal(shared.headers.get('content-security-policy'), 'sandbox');
    assert.equal(shared.headers.get('set-cookie'), null);
    const script = await fetch(`${base}/app/sw/sw.js`);
    assert.equal(script.headers.get('service-worker-allowed'), null);

    const browser = await chromium.launch({
        executablePath: process.env.PROVEN_CHROMIUM || '/usr/bin/chromium',
        args: ['--no-sandbox'] });
    try {
        const page = await browser.newPage();
        const state = async (url) => {
            await page.goto(url);
            await page.waitForSelector('body[data-state]',
                                       { state: 'attached', timeout: 20000 });
            return page.getAttribute('body', 'data-state');
        };

        /* the app's page on the shared origin: no script runs at all */
        await page.goto(`${base}/app/sw/`);
        await page.waitForTimeout(500);
        assert.equal(await page.getAttribute('body', 'data-state'), null);

        /* on its own origin it may have a service worker, for itself */
        assert.equal(await state(`http://sw.localhost:${port}/`),
                     'registered');
        await page.goto(`http://sw.localhost:${port}/elsewhere`);
        assert.match(await page.textContent('body'),
                     /taken over by the app sw/);

        /* and nothing else is taken over: the shared origin's pages, the
           SDK, another app's origin */
        assert.equal(await state(`${base}/web/`), 'done');
        assert.equal(await page.evaluate(() => navigator.serviceWorker
            .getRegistrations().then((r) => r.length)), 0);
        await page.goto(`http://hello.localhost:${port}/count`);
        assert.match(await page.textContent('body'), /"count"/);
        const sdk = await page.goto(`${base}/sdk/proven.mjs`);
        assert.doesNotMatch(await sdk.text(), /taken over/);
    } finally {
        await browser.close();
    }
});
