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

/*
 * Passkeys in Chromium: a virtual authenticator (DevTools' WebAuthn
 * domain, PRF on) registers one on examples/web/passkey.html, a reload
 * signs in as the same identity, a second profile holding a copy of the
 * credential (no PRF secret comes with it) signs in as that identity too,
 * and then the first, its counter now behind, is refused as a clone.
 */
test('a passkey: the same identity after a reload and in a second profile',
     async () => {
    const url = new URL(process.env.PROVEN_URL);
    const page = `http://localhost:${url.port}/web/passkey.html`;
    const browser = await chromium.launch({
        executablePath: process.env.PROVEN_CHROMIUM || '/usr/bin/chromium',
        args: ['--no-sandbox'] });
    async function profile() {
        const context = await browser.newContext();
        const tab = await context.newPage();
        const cdp = await context.newCDPSession(tab);
        await cdp.send('WebAuthn.enable');
        const { authenticatorId } = await cdp.send(
            'WebAuthn.addVirtualAuthenticator', { options: {
                protocol: 'ctap2', ctap2Version: 'ctap2_1',
                transport: 'internal', hasResidentKey: true,
                hasUserVerification: true, isUserVerified: true,
                hasPrf: true, automaticPresenceSimulation: true } });
        return { tab, cdp, authenticatorId };
    }
    async function visit(tab, address) {
        await tab.goto(address);
        await tab.waitForSelector('body[data-state]', { timeout: 20000 });
        const text = await tab.textContent('#log');
        return { state: await tab.getAttribute('body', 'data-state'), text,
                 identity: (text.match(/identity: ([0-9a-f]{64})/) || [])[1] };
    }
    try {
        const a = await profile();
        const first = await visit(a.tab, page);
        assert.equal(first.state, 'done', first.text);
        assert.match(first.text, /registered a passkey/);

        const again = await visit(a.tab, page);
        assert.equal(again.state, 'done', again.text);
        assert.match(again.text, /signed in with a passkey; its PRF key: this identity's/);
        assert.equal(again.identity, first.identity);

        /* the credential, copied to another profile's authenticator */
        const { credentials } = await a.cdp.send('WebAuthn.getCredentials',
            { authenticatorId: a.authenticatorId });
        assert.equal(credentials.length, 1);
        const b = await profile();
        await b.cdp.send('WebAuthn.addCredential', {
            authenticatorId: b.authenticatorId, credential: credentials[0] });
        const other = await visit(b.tab, `${page}?login=1`);
        assert.equal(other.state, 'done', other.text);
        assert.equal(other.identity, first.identity);
        assert.match(other.text, /its PRF key: not given here/);

        /* the first profile's copy now counts behind the node: a clone */
        const behind = await visit(a.tab, page);
        assert.equal(behind.state, 'error', behind.text);
        assert.match(behind.text, /cloned authenticator/);
    } finally {
        await browser.close();
    }
});
