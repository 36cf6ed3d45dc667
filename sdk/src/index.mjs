// Proven Node client, for Node (18+) and browsers.
//
//   import { Session } from '@proven-network/node-client';
//   const s = await Session.open('https://node.example', {
//       app: 'hello', root: ROOT_PEM, pcrs: { 0: 'ab12…' } });
//   await s.connect();                       // optional: WebSocket
//   const r = await s.execute('index.js#sum', 1, 2);   // {output, …}
//
// Session.open asks the node for an attestation document bound to a fresh
// nonce, this client's new Ed25519 key and the session: it checks the
// document's COSE signature (ES384) and certificate chain up to the pinned
// root, the nonce, and the PCRs the caller expects, before it trusts the
// session key in it.  Every message is then a COSE_Sign1 (EdDSA) signed
// with the client key over the session id, with a strictly increasing
// seq; every answer must be signed by the session key for the same seq and
// type, or it is refused here.

import * as cbor from 'cborg';
import { ed25519 } from '@noble/curves/ed25519';
import * as x509 from '@peculiar/x509';

const PROTECTED = new Uint8Array([0xa1, 0x01, 0x27]);    // {1: -8}: EdDSA
const EMPTY = new Uint8Array(0);

/* A refusal from the node (unsigned JSON) or a broken answer. */
export class RpcError extends Error {
    constructor(code, message, status = 0) {
        super(`${code}: ${message}`);
        this.code = code;
        this.status = status;
    }
}

async function webcrypto() {
    if (globalThis.crypto?.subtle) {
        return globalThis.crypto;
    }
    const { webcrypto: wc } = await import('node:crypto');   // Node 18
    return wc;
}

function randomBytes(crypto, n) {
    return crypto.getRandomValues(new Uint8Array(n));
}

function equalBytes(a, b) {
    if (a.length !== b.length) {
        return false;
    }
    let d = 0;
    for (let i = 0; i < a.length; i++) {
        d |= a[i] ^ b[i];
    }
    return d === 0;
}

export function hex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0'))
        .join('');
}

function fromHex(text) {
    const out = new Uint8Array(text.length / 2);
    for (let i = 0; i < out.length; i++) {
        out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
    }
    return out;
}

/* The session id's text form: the canonical lowercase UUID. */
export function uuid(id) {
    const h = hex(id);
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-`
        + `${h.slice(16, 20)}-${h.slice(20)}`;
}

function certificate(pemOrDer) {
    return new x509.X509Certificate(pemOrDer);
}

// ---- attestation ------------------------------------------------------------

/*
 * Checks an attestation document (COSE_Sign1, ES384, tagged or not): its
 * chain from the leaf through the cabundle to root (PEM text or DER
 * bytes; the bundle's first certificate must be that root), each valid at
 * `now`, the document's signature by the leaf, and, when given, its nonce
 * and PCRs ({index: hex}).  Returns its fields.
 */
export async function verifyAttestation(bytes, { root, nonce, pcrs,
                                                 now = new Date() } = {}) {
    if (!root) {
        throw new RpcError('attestation', 'no root to check the document '
                           + 'against');
    }
    const crypto = await webcrypto();
    x509.cryptoProvider.set(crypto);

    const tags = [];
    tags[18] = (v) => v;
    const cose = cbor.decode(bytes, { tags });
    if (!Array.isArray(cose) || cose.length !== 4) {
        throw new RpcError('attestation', 'not a COSE_Sign1 document');
    }
    const [prot, , payload, signature] = cose;
    const map = cbor.decode(payload, { useMaps: true });
    const field = (k) => map.get(k);

    const pinned = certificate(root);
    const bundle = (field('cabundle') || []).map((der) => certificate(der));
    if (bundle.length === 0
        || !equalBytes(new Uint8Array(bundle[0].rawData),
                       new Uint8Array(pinned.rawData))) {
        throw new RpcError('attestation', 'the chain does not start at the '
                           + 'pinned root');
    }
    const leaf = certificate(field('certificate'));
    const chain = [...bundle, leaf];
    for (let i = 1; i < chain.length; i++) {
        const ok = await chain[i].verify({ publicKey: chain[i - 1], date: now },
                                         crypto);
        if (!ok) {
            throw new RpcError('attestation', `certificate ${i} of the chain `
                               + 'is not valid or not signed by the one '
                               + 'before it');
        }
    }

    const key = await leaf.publicKey.export(
        { name: 'ECDSA', namedCurve: 'P-384' }, ['verify'], crypto);
    const tbs = cbor.encode(['Signature1', prot, EMPTY, payload]);
    if (!await crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-384' }, key,
                                    signature, tbs)) {
        throw new RpcError('attestation', 'the document is not signed by '
                           + 'its certificate');
    }

    if (nonce && !equalBytes(field('nonce') || EMPTY, nonce)) {
        throw new RpcError('attestation', 'the document does not carry our '
                           + 'nonce');
    }
    for (const [index, want] of Object.entries(pcrs || {})) {
        const got = field('pcrs')?.get(Number(index));
        if (!got || hex(got) !== want.toLowerCase()) {
            throw new RpcError('attestation', `PCR ${index} is not the `
                               + 'expected measurement');
        }
    }

    return {
        moduleId: field('module_id'),
        timestamp: field('timestamp'),
        digest: field('digest'),
        pcrs: field('pcrs'),
        publicKey: field('public_key') || null,
        userData: field('user_data') || null,
        nonce: field('nonce') || null,
        certificate: leaf,
    };
}

// ---- messages ---------------------------------------------------------------

function sigStructure(aad, payload) {
    return cbor.encode(['Signature1', PROTECTED, aad, payload]);
}

export function signMessage(privateKey, sessionId, seq, body) {
    const payload = cbor.encode(body);
    const signature = ed25519.sign(sigStructure(sessionId, payload),
                                   privateKey);
    return cbor.encode([PROTECTED, { seq }, payload, signature]);
}

export function openMessage(publicKey, sessionId, bytes) {
    let msg;
    try {
        msg = cbor.decode(bytes);
    } catch (e) {
        throw new RpcError('bad_answer', `the answer is not CBOR: ${e.message}`);
    }
    if (!Array.isArray(msg) || msg.length !== 4
        || !equalBytes(msg[0], PROTECTED) || typeof msg[1]?.seq !== 'number'
        || !(msg[2] instanceof Uint8Array) || !(msg[3] instanceof Uint8Array)) {
        throw new RpcError('bad_answer', 'the answer is not a COSE_Sign1 '
                           + 'message');
    }
    if (!ed25519.verify(msg[3], sigStructure(sessionId, msg[2]), publicKey)) {
        throw new RpcError('bad_answer', 'the answer is not signed by the '
                           + 'session key');
    }
    return { seq: msg[1].seq, body: cbor.decode(msg[2]) };
}

// ---- sessions ---------------------------------------------------------------

export class Session {
    /*
     * Opens a session at url (the node's base URL): app (its sessions are
     * at /app/NAME/session; none: the management session), root and pcrs
     * to check the document with.  origin: Node only (a browser sends its
     * own).  fetch and WebSocket: implementations to use (default: the
     * global ones; in Node, pass the `ws` package's WebSocket to connect).
     */
    static async open(url, { app, root, pcrs, origin, fetch: doFetch,
                             WebSocket: WS } = {}) {
        const crypto = await webcrypto();
        const f = doFetch || globalThis.fetch.bind(globalThis);
        const privateKey = ed25519.utils.randomPrivateKey();
        const publicKey = ed25519.getPublicKey(privateKey);
        const nonce = randomBytes(crypto, 32);
        const base = url.replace(/\/$/, '');
        const prefix = app ? `${base}/app/${encodeURIComponent(app)}` : base;

        const headers = { 'content-type': 'application/cbor' };
        if (origin) {
            headers.origin = origin;
        }
        const res = await f(`${prefix}/session`, {
            method: 'POST', headers,
            body: cbor.encode({ nonce, public_key: publicKey }) });
        const body = new Uint8Array(await res.arrayBuffer());
        if (res.status !== 200) {
            throw refusal(res.status, body);
        }
        const doc = await verifyAttestation(body, { root, nonce, pcrs });
        if (!doc.userData || doc.userData.length !== 16
            || !doc.publicKey || doc.publicKey.length !== 32) {
            throw new RpcError('attestation', 'the document binds no session '
                               + 'id and key');
        }
        return new Session({ base, prefix, app, privateKey, publicKey,
                             id: doc.userData, serverKey: doc.publicKey,
                             document: doc, fetch: f,
                             WebSocket: WS || globalThis.WebSocket });
    }

    constructor(o) {
        Object.assign(this, o);
        this.text = uuid(this.id);
        this.seq = 0;
        this.socket = null;
        this.waiting = [];
    }

    /* Sends {type, data}; resolves with the answer's {result, data}. */
    async send(type, data = null) {
        const seq = ++this.seq;
        const message = signMessage(this.privateKey, this.id, seq,
                                    { type, data });
        const bytes = this.socket ? await this.sendFrame(message)
                                  : await this.post(message);
        const answer = openMessage(this.serverKey, this.id, bytes);
        if (answer.seq !== seq || answer.body?.type !== type) {
            throw new RpcError('bad_answer', 'the answer is for another '
                               + 'message');
        }
        return answer.body.data;
    }

    async post(message) {
        const res = await this.fetch(`${this.prefix}/rpc/http?session=`
                                     + this.text, {
            method: 'POST', headers: { 'content-type': 'application/cbor' },
            body: message });
        const body = new Uint8Array(await res.arrayBuffer());
        if (res.status !== 200) {
            throw refusal(res.status, body);
        }
        return body;
    }

    /* Moves the session onto a WebSocket; messages keep their order. */
    connect() {
        if (!this.WebSocket) {
            return Promise.reject(new Error('no WebSocket implementation: '
                                            + 'pass one to Session.open'));
        }
        const url = `${this.prefix.replace(/^http/, 'ws')}/rpc/ws?session=`
            + this.text;
        return new Promise((resolve, reject) => {
            const ws = new this.WebSocket(url);
            ws.binaryType = 'arraybuffer';
            ws.onopen = () => {
                this.socket = ws;
                resolve(this);
            };
            ws.onerror = () => reject(new Error(`cannot open ${url}`));
            ws.onmessage = (event) => {
                const w = this.waiting.shift();
                if (w === undefined) {
                    return;
                }
                if (typeof event.data === 'string') {
                    const e = JSON.parse(event.data).error || {};
                    w.reject(new RpcError(e.code, e.message));
                } else {
                    w.resolve(new Uint8Array(event.data));
                }
            };
            ws.onclose = (event) => {
                this.socket = null;
                for (const w of this.waiting.splice(0)) {
                    w.reject(new RpcError('closed', `the WebSocket closed `
                                          + `(${event.code})`));
                }
            };
        });
    }

    sendFrame(message) {
        return new Promise((resolve, reject) => {
            this.waiting.push({ resolve, reject });
            this.socket.send(message);
        });
    }

    close() {
        this.socket?.close(1000);
        this.socket = null;
    }

    // ---- commands ----

    whoAmI() {
        return this.send('WhoAmI');
    }

    /* Proves an identity (an Ed25519 private key, 32 bytes) in this session. */
    identify(identityKey) {
        return this.send('Identify', {
            passkey_prf_public_key_bytes: ed25519.getPublicKey(identityKey),
            session_id_signature_bytes: ed25519.sign(this.id, identityKey) });
    }

    anonymize() {
        return this.send('Anonymize');
    }

    execute(handler, ...args) {
        return this.send('Execute', { handler, args });
    }

    executeHash(moduleHash, handler, ...args) {
        return this.send('ExecuteHash', {
            module_hash: typeof moduleHash === 'string' ? fromHex(moduleHash)
                                                        : moduleHash,
            handler, args });
    }

    createApplication() {
        return this.send('CreateApplication');
    }

    addAllowedOrigin(applicationId, origin) {
        return this.send('AddAllowedOrigin', { application_id: applicationId,
                                               origin });
    }

    listApplications() {
        return this.send('ListApplicationsByOwner');
    }

    /* package: the bytes `proven app pack --out` writes. */
    deploy(packageBytes, applicationId) {
        return this.send('Deploy', applicationId === undefined
            ? { package: packageBytes }
            : { package: packageBytes, application_id: applicationId });
    }
}

/* A new identity key (keep it: it is the identity). */
export function newIdentityKey() {
    return ed25519.utils.randomPrivateKey();
}

function refusal(status, body) {
    let e = {};
    try {
        e = JSON.parse(new TextDecoder().decode(body)).error || {};
    } catch {
        e = { code: 'http_' + status, message: 'status ' + status };
    }
    return new RpcError(e.code, e.message, status);
}
