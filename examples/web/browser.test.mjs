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
