// Passkeys over a session (daemon/sessions/passkeys.c, webauthn.c), from a
// client written from the protocol and an authenticator written here from
// the WebAuthn specification (P-256 and Ed25519 credentials, attestation
// "none"), against the node tests/rpc.sh runs (examples/hello as "hello").
// The page's origin is the relying party: a ceremony of another page, a
// challenge used twice, an authenticator that did not verify its user, or
// one copied (its counter behind) gets nothing.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';

import { Authenticator } from './authenticator.mjs';
import * as p from './protocol.mjs';

const base = process.env.PROVEN_URL;
const rootPem = fs.readFileSync(process.env.PROVEN_ROOT);
const origin = 'https://dapp.example';
const RP_ID = 'dapp.example';

const session = (o = origin) => p.createSession(base, { rootPem,
                                                         app: 'hello',
                                                         origin: o });

async function command(s, type, data = null) {
    const r = await p.call(s, type, data);
    assert.equal(r.status, 200, JSON.stringify(r.error));
    return r.answer.body.data;
}

async function challenge(s, rpId = RP_ID) {
    const r = await command(s, 'PasskeyChallenge');
    assert.equal(r.result, 'success', JSON.stringify(r));
    assert.equal(r.data.rp_id, rpId);
    return r.data.challenge;
}

/* an identified session with a passkey registered by it */
async function registered(auth = new Authenticator()) {
    const s = await session();
    const keys = p.newKeyPair();
    assert.equal((await command(s, 'Identify', p.identifyData(s, keys)))
        .result, 'success');
    const r = await command(s, 'RegisterPasskey',
                            auth.create(await challenge(s)));
    assert.equal(r.result, 'success', JSON.stringify(r));
    assert.deepEqual(Buffer.from(r.data.credential_id), auth.id);
    return { auth, identity: Buffer.from(keys.raw) };
}

test('a passkey registered by an identity signs a new session in as it',
     async () => {
    for (const kind of ['ec', 'ed25519']) {
        const { auth, identity } = await registered(new Authenticator(kind));
        const s = await session();
        const r = await command(s, 'LoginPasskey', auth.get(
            await challenge(s)));
        assert.equal(r.result, 'success', JSON.stringify(r));
        assert.deepEqual(Buffer.from(r.data.identity), identity);
        const who = await command(s, 'WhoAmI');
        assert.equal(who.result, 'identified');
        assert.deepEqual(Buffer.from(who.data.identity), identity);
    }
});

test('a challenge serves one ceremony, and only its own', async () => {
    const { auth } = await registered();
    const s = await session();
    const ch = await challenge(s);
    const answer = auth.get(ch);
    assert.equal((await command(s, 'LoginPasskey', answer)).result,
                 'success');
    /* the same answer again: no challenge left */
    let r = await command(s, 'LoginPasskey', auth.get(ch));
    assert.equal(r.result, 'failure');
    assert.match(r.data, /PasskeyChallenge first/);
    /* a new challenge, an answer made for the old one */
    await challenge(s);
    r = await command(s, 'LoginPasskey', auth.get(ch));
    assert.match(r.data, /challenge is not the one/);
    /* another session's challenge, answered here */
    const other = await session();
    const theirs = await challenge(other);
    await challenge(s);
    r = await command(s, 'LoginPasskey', auth.get(theirs));
    assert.match(r.data, /challenge is not the one/);
});

test('a ceremony of another page gets nothing', async () => {
    const { auth } = await registered();
    /* made on evil.example, relayed into a session of dapp.example */
    let s = await session();
    let r = await command(s, 'LoginPasskey', auth.get(await challenge(s), {
        o: 'https://evil.example' }));
    assert.match(r.data, /origin is not the session's/);
    /* made for evil.example's relying party */
    r = await command(s, 'LoginPasskey', auth.get(await challenge(s), {
        rpId: 'evil.example' }));
    assert.match(r.data, /relying party/);
    /* a session of evil.example: the credential is not its own */
    s = await session('https://evil.example');
    r = await command(s, 'LoginPasskey', auth.get(await challenge(s,
                                                                  'evil.example'), {
        o: 'https://evil.example', rpId: 'evil.example' }));
    assert.match(r.data, /no passkey of this id for this app at evil.example/);
});

test('the user verified, and a counter that only goes up', async () => {
    const { auth } = await registered();
    const s = await session();
    let r = await command(s, 'LoginPasskey', auth.get(await challenge(s), {
        flags: 0x01 }));
    assert.match(r.data, /did not verify the user/);
    r = await command(s, 'LoginPasskey', auth.get(await challenge(s), {
        count: 5 }));
    assert.equal(r.result, 'success');
    /* a copy of the authenticator, behind or level */
    for (const count of [5, 3]) {
        r = await command(s, 'LoginPasskey', auth.get(await challenge(s), {
            count }));
        assert.match(r.data, /cloned authenticator/);
    }
    r = await command(s, 'LoginPasskey', auth.get(await challenge(s), {
        count: 6 }));
    assert.equal(r.result, 'success');
    /* a signature by another key */
    const stranger = new Authenticator();
    stranger.id = auth.id;
    r = await command(s, 'LoginPasskey', stranger.get(await challenge(s), {
        count: 9 }));
    assert.match(r.data, /does not verify/);
});

test('registration: an identity, attestation none, a credential once',
     async () => {
    const auth = new Authenticator();
    const s = await session();
    let r = await command(s, 'RegisterPasskey', auth.create(
        await challenge(s)));
    assert.match(r.data, /identify first/);
    const keys = p.newKeyPair();
    await command(s, 'Identify', p.identifyData(s, keys));
    r = await command(s, 'RegisterPasskey', auth.create(await challenge(s), {
        fmt: 'packed' }));
    assert.match(r.data, /"none"/);
    r = await command(s, 'RegisterPasskey', auth.create(await challenge(s), {
        flags: 0x41 }));
    assert.match(r.data, /did not verify the user/);
    r = await command(s, 'RegisterPasskey', auth.create(await challenge(s)));
    assert.equal(r.result, 'success');
    /* the same credential id, claimed by another identity */
    const t = await session();
    await command(t, 'Identify', p.identifyData(t, p.newKeyPair()));
    r = await command(t, 'RegisterPasskey', auth.create(await challenge(t)));
    assert.match(r.data, /registered already/);
    /* bad input */
    r = await command(t, 'RegisterPasskey', { client_data_json: 'x' });
    assert.equal(r.result, 'failure');
    r = await command(t, 'PasskeyChallenge');
    r = await command(t, 'LoginPasskey', { credential_id: auth.id });
    assert.match(r.data, /LoginPasskey takes/);
});

test('a passkey signs in to its app, not the management session',
     async () => {
    const { auth } = await registered();
    /* the management session (whose commands change apps) has none */
    const m = await p.createSession(base, { rootPem, origin });
    let r = await command(m, 'PasskeyChallenge');
    assert.match(r.data, /passkeys sign in to an app's sessions/);
    /* signed in by a passkey: no new passkey, no registry command */
    const s = await session();
    assert.equal((await command(s, 'LoginPasskey', auth.get(
        await challenge(s)))).result, 'success');
    r = await command(s, 'RegisterPasskey', new Authenticator().create(
        await challenge(s)));
    assert.match(r.data, /identify first \(Identify/);
});

test('an Anonymize sent right after a LoginPasskey stands', async () => {
    const { auth } = await registered();
    const s = await session();
    const ch = await challenge(s);
    const ws = await p.RawSocket.open(s, { port: Number(new URL(base).port) });
    /* both on their way before the login's check ends on the pool */
    const login = p.command(s, 'LoginPasskey', auth.get(ch));
    const anonymize = p.command(s, 'Anonymize');
    ws.send(p.frame(2, login));
    ws.send(p.frame(2, anonymize));
    /* both answered (in any order: the login's comes from the pool) */
    for (let i = 0; i < 2; i++) {
        assert.equal((await ws.next()).opcode, 2);
    }
    ws.end();
    const who = await command(s, 'WhoAmI');
    assert.equal(who.result, 'anonymous', JSON.stringify(who));
});
