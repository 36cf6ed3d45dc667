// Proven Node client, for Node (18+) and browsers: protocol v2.
//
//   import { Session } from '@proven-network/node-client';
//   const s = await Session.open('https://node.example', {
//       app: 'hello', root: ROOT_PEM,
//       pcrs: { 0: 'ab12…', 1: '…', 2: '…' } });      // required
//   await s.connect();                       // optional: WebSocket
//   const r = await s.execute('index.js#sum', 1, 2);   // {output, …}
//
// Session.open asks the node for an attestation document bound to a fresh
// nonce, this client's new Ed25519 key and the session: it checks the
// document's COSE signature (ES384) and certificate chain up to the pinned
// root, the nonce, the expected PCRs (0, 1 and 2 at least), and that its
// user_data is "proven-session-v1", the session id and the hash of this
// client's key, before it trusts the session key in it.  Every message is
// then a COSE_Sign1 (EdDSA) with its seq in the signed header, signed
// with the client key over the session id; every answer must be signed by
// the session key for the same seq, over the session id and the hash of
// the very request it answers, or it is refused here.

import * as cbor from 'cborg';
import { ed25519 } from '@noble/curves/ed25519';
import * as x509 from '@peculiar/x509';

const EMPTY = new Uint8Array(0);
const SESSION_MARK = new TextEncoder().encode('proven-session-v1');
const IDENTIFY_MARK = new TextEncoder().encode('proven-identify-v1');
const REQUIRED_PCRS = ['0', '1', '2'];

/* The protected header: the canonical {1: -8, "seq": n} (EdDSA). */
function protectedHeader(seq) {
    return cbor.encode(new Map([[1, -8], ['seq', seq]]));
}

function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
        out.set(p, at);
        at += p.length;
    }
    return out;
}

async function sha256(crypto, bytes) {
    return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
}

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
    /* one set of PCRs, or a list of sets (a cluster upgrading): one of
       them, whole */
    const sets = Array.isArray(pcrs) ? pcrs : [pcrs || {}];
    const differs = (set) => Object.entries(set).find(([index, want]) => {
        if (!/^[0-9]+$/.test(index)) {
            return false;               /* a version, a name: not a PCR */
        }
        const got = field('pcrs')?.get(Number(index));
        return !got || hex(got) !== String(want).toLowerCase();
    });
    const first = differs(sets[0] || {});
    if (sets.length === 0 || sets.every((set) => differs(set))) {
        throw new RpcError('attestation', sets.length === 1
            ? `PCR ${first[0]} is not the expected measurement`
            : `the PCRs are none of the ${sets.length} expected `
              + 'measurements');
    }

    return {
        /* the dev provider's: a local node, never an enclave */
        dev: String(field('module_id')).startsWith('proven-dev-'),
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

function sigStructure(prot, aad, payload) {
    return cbor.encode(['Signature1', prot, aad, payload]);
}

/* A request: seq (1 <= seq < 2^53) signed in the protected header. */
export function signMessage(privateKey, sessionId, seq, body) {
    if (!Number.isSafeInteger(seq) || seq < 1) {
        throw new RpcError('bad_seq', 'seq must be 1 to 2^53-1');
    }
    const prot = protectedHeader(seq);
    const payload = cbor.encode(body);
    const signature = ed25519.sign(sigStructure(prot, sessionId, payload),
                                   privateKey);
    return cbor.encode([prot, new Map(), payload, signature]);
}

/* The external AAD of the answer to request: the id, SHA-256(request). */
export async function answerAad(sessionId, request) {
    return concat(sessionId, await sha256(await webcrypto(), request));
}

/*
 * An answer's {seq, body}, once its signature by publicKey checks over
 * aad (answerAad of the request it must answer).
 */
export function openMessage(publicKey, aad, bytes) {
    let msg, header;
    try {
        msg = cbor.decode(bytes, { useMaps: true });
        header = msg[0] instanceof Uint8Array
            ? cbor.decode(msg[0], { useMaps: true }) : null;
    } catch (e) {
        throw new RpcError('bad_answer', `the answer is not CBOR: ${e.message}`);
    }
    const seq = header?.get('seq');
    if (!Array.isArray(msg) || msg.length !== 4 || !(header instanceof Map)
        || header.size !== 2 || header.get(1) !== -8
        || !Number.isSafeInteger(seq)
        || !equalBytes(msg[0], protectedHeader(seq))
        || !(msg[1] instanceof Map) || msg[1].size !== 0
        || !(msg[2] instanceof Uint8Array) || !(msg[3] instanceof Uint8Array)) {
        throw new RpcError('bad_answer', 'the answer is not a COSE_Sign1 '
                           + 'message of protocol v2');
    }
    if (!ed25519.verify(msg[3], sigStructure(msg[0], aad, msg[2]),
                        publicKey)) {
        throw new RpcError('bad_answer', 'the answer is not signed by the '
                           + 'session key for this request');
    }
    return { seq, body: cbor.decode(msg[2]) };
}

/* What an identity key signs to Identify (protocol v2). */
export function identifyMessage(app, origin, sessionId) {
    const a = new TextEncoder().encode(app || '');
    const o = new TextEncoder().encode(origin || '');
    if (a.length > 255 || o.length > 255) {
        throw new RpcError('bad_request', 'app and origin must be at most '
                           + '255 bytes');
    }
    return concat(IDENTIFY_MARK, new Uint8Array([a.length]), a,
                  new Uint8Array([o.length]), o, sessionId);
}

/*
 * What an Ethereum wallet signs (EIP-191 personal_sign) to link its
 * address to the identity of this session (LinkEthereum): every line binds
 * it to one session of one node, app, origin and identity.
 */
export function linkEthereumMessage(app, origin, sessionId, identity,
                                    address) {
    if (!/^0x[0-9a-fA-F]{40}$/.test(address)) {
        throw new RpcError('bad_request', 'an Ethereum address is 0x and 40 '
                           + 'hex digits');
    }
    return `proven-link-ethereum-v1\naddress: ${address.toLowerCase()}\n`
        + `identity: ${hex(identity)}\napp: ${app || ''}\n`
        + `origin: ${origin || ''}\nsession: ${uuid(sessionId)}`;
}

/*
 * The measurements a governance contract (Governance.sol) allows now, as
 * expected PCRs for Session.open: [{0: hex, 1: hex, 2: hex, version}].
 * Read with eth_call through rpc, a JSON-RPC endpoint the caller trusts
 * (its wallet's or its own node's; never the Proven node's, whose host
 * could answer for it).
 */
const MEASUREMENTS_SELECTOR = '0xe4048670';       /* measurements() */

export async function governanceMeasurements(rpc, contract,
                                             { fetch: f = fetch } = {}) {
    if (!/^0x[0-9a-fA-F]{40}$/.test(contract)) {
        throw new RpcError('bad_request', 'a contract is 0x and 40 hex '
                           + 'digits');
    }
    const res = await f(rpc, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_call',
                               params: [{ to: contract,
                                          data: MEASUREMENTS_SELECTOR },
                                        'latest'] }) });
    const answer = await res.json();
    if (typeof answer?.result !== 'string'
        || !/^0x([0-9a-f]{64})*$/i.test(answer.result)) {
        throw new RpcError('governance', 'measurements(): '
            + (answer?.error?.message || 'no result'));
    }
    const data = fromHex(answer.result.slice(2));
    const value = (at) => {
        if (at + 32 > data.length) {
            throw new RpcError('governance', 'measurements(): a short '
                               + 'answer');
        }
        let v = 0n;
        for (let i = at; i < at + 32; i++) {
            v = (v << 8n) | BigInt(data[i]);
        }
        return v;
    };
    /* an offset or a length: within the answer */
    const word = (at) => {
        const v = value(at);
        if (v > BigInt(data.length)) {
            throw new RpcError('governance', 'measurements(): an offset '
                               + 'past the answer');
        }
        return Number(v);
    };
    /* (bytes[], bytes[], bytes[], uint64[]) */
    const list = (head) => {
        const at = word(head);
        const n = word(at);
        return Array.from({ length: n }, (_, i) => at + 32 + i * 32);
    };
    const bytesAt = (base, slot) => {
        const off = base + word(slot);
        const len = word(off);
        if (len !== 48 || off + 32 + len > data.length) {
            throw new RpcError('governance', 'measurements(): a PCR is not '
                               + '48 bytes');
        }
        return hex(data.slice(off + 32, off + 32 + len));
    };
    const pcrs = [0, 1, 2].map((k) => {
        const base = word(32 * k);
        return list(32 * k).map((slot) => bytesAt(base + 32, slot));
    });
    const versions = list(96).map((slot) => Number(value(slot)));
    if (pcrs[1].length !== pcrs[0].length || pcrs[2].length !== pcrs[0].length
        || versions.length !== pcrs[0].length) {
        throw new RpcError('governance', 'measurements(): lists of '
                           + 'different lengths');
    }
    return pcrs[0].map((p0, i) => ({ 0: p0, 1: pcrs[1][i], 2: pcrs[2][i],
                                     version: versions[i] }));
}

/*
 * Passkeys: the identity key a passkey's PRF output derives, so that the
 * same passkey gives the same identity wherever it is held.  The PRF is
 * asked with one salt, SHA-256("proven-passkey-prf-v1"); its 32 bytes are
 * HKDF-SHA256'd (no salt, info "proven-identity-v1") into an Ed25519 seed.
 */
export const PRF_SALT = Uint8Array.from([
    0xa0, 0xf3, 0xcb, 0x3a, 0xd8, 0xa2, 0x9d, 0xe4, 0xe3, 0xce, 0xa9, 0xe6,
    0x19, 0xfc, 0xb7, 0xc7, 0xe3, 0x08, 0xfd, 0xbf, 0x77, 0x98, 0xf0, 0x89,
    0x13, 0x89, 0x77, 0xc9, 0x7d, 0x90, 0x3e, 0x86]);

export async function identityFromPrf(prf) {
    const crypto = await webcrypto();
    const base = await crypto.subtle.importKey('raw', prf, 'HKDF', false,
                                               ['deriveBits']);
    return new Uint8Array(await crypto.subtle.deriveBits({
        name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0),
        info: new TextEncoder().encode('proven-identity-v1') }, base, 256));
}

function prfOutput(credential) {
    const first = credential.getClientExtensionResults?.()?.prf?.results
        ?.first;
    return first ? new Uint8Array(first) : null;
}

/* Plain http only to this machine: anything else must be https. */
function checkScheme(base) {
    const u = new URL(base);
    const host = u.hostname.replace(/^\[|\]$/g, '');
    const loopback = host === 'localhost' || host.endsWith('.localhost')
        || /^127\.\d+\.\d+\.\d+$/.test(host) || host === '::1';
    if (u.protocol !== 'https:' && !(u.protocol === 'http:' && loopback)) {
        throw new RpcError('insecure', `${u.protocol}//${u.host}: plain http `
                           + 'only to loopback; use https');
    }
    return u;
}

/* The expected PCRs, required: 0, 1 and 2 at least (of each set, for a
 * list of sets). */
function checkPcrs(pcrs, insecureAnyCode) {
    if (insecureAnyCode) {
        console.warn('proven: insecureAnyCode: any code in any enclave is '
                     + 'trusted; for development only');
        return pcrs || {};
    }
    if (Array.isArray(pcrs)) {
        if (pcrs.length === 0) {
            throw new RpcError('attestation', 'an empty list of expected '
                               + 'measurements trusts nothing');
        }
        pcrs.forEach((set) => checkPcrs(set, false));
        return pcrs;
    }
    const missing = REQUIRED_PCRS.filter((i) => !pcrs || !pcrs[i]);
    if (missing.length > 0) {
        throw new RpcError('attestation', `expected PCRs are required (${
            missing.join(', ')} missing): pin the measurements of the code `
            + 'you trust, or pass insecureAnyCode: true for development');
    }
    return pcrs;
}

/*
 * Node over https: a document from the TLS-bound endpoint must bind the
 * key of the certificate that very connection was served, so the TLS
 * session ends inside the attested node and not at the host.  Returns
 * what every later connection is made with: an agent that accepts that
 * key alone, whatever WebPKI says (the attestation is what vouches for
 * it); null when not in Node over https.  A node renews its certificate
 * with a new key: a connection served another key fails with code
 * 'tls-key-changed', and refresh() pins the new key once a document over
 * a new connection binds it (pinnedFetch does both, and tries again once).
 */
async function pinTls(u, root, pcrs) {
    if (u.protocol !== 'https:' || typeof process === 'undefined'
        || !process.versions?.node) {
        return null;
    }
    const https = await import('node:https');
    const { X509Certificate } = await import('node:crypto');
    const crypto = await webcrypto();
    const served = (socket) => {
        const der = socket.getPeerCertificate?.()?.raw;
        return der ? new Uint8Array(new X509Certificate(der).publicKey
            .export({ type: 'spki', format: 'der' })) : null;
    };
    /* the key this connection was served, if a fresh document binds it */
    const attestServed = async () => {
        const nonce = randomBytes(crypto, 32);
        const { body, spki } = await new Promise((resolve, reject) => {
            const req = https.request(
                new URL(`/attestation?nonce=${hex(nonce)}`, u),
                { rejectUnauthorized: false, agent: false }, (res) => {
                    const key = served(res.socket);
                    const chunks = [];
                    res.on('data', (c) => chunks.push(c));
                    res.on('end', () => resolve({
                        body: new Uint8Array(Buffer.concat(chunks)),
                        spki: key }));
                });
            req.on('error', reject);
            req.end();
        });
        const doc = await verifyAttestation(body, { root, nonce, pcrs });
        const mark = new TextEncoder().encode('proven-tls-binding-v1');
        if (!spki || !doc.userData || !equalBytes(doc.userData, mark)
            || !doc.publicKey || !equalBytes(doc.publicKey, spki)) {
            throw new RpcError('attestation', 'the TLS certificate served is '
                               + 'not the one the node attests: TLS ends '
                               + 'outside it');
        }
        return spki;
    };
    const pin = { https, spki: await attestServed(), refreshing: null };
    /* one refresh at a time, whatever number of calls wait on it */
    pin.refresh = () => {
        pin.refreshing ??= attestServed()
            .then((key) => { pin.spki = key; })
            .finally(() => { pin.refreshing = null; });
        return pin.refreshing;
    };
    /*
     * no TLS session resumed: each handshake shows its certificate; and
     * a connection is handed to its request only once its key is the
     * attested one, so that nothing is ever written to another
     */
    pin.agent = new https.Agent({ rejectUnauthorized: false,
                                  maxCachedSessions: 0 });
    const make = pin.agent.createConnection;
    pin.agent.createConnection = (options, cb) => {
        const socket = make.call(pin.agent, options);
        const failed = (e) => cb(e);
        socket.once('error', failed);
        socket.once('secureConnect', () => {
            socket.off('error', failed);
            const key = served(socket);
            if (!key || !equalBytes(key, pin.spki)) {
                socket.destroy();
                cb(new RpcError('tls-key-changed', 'a connection was served '
                                + 'another TLS key than the attested one'));
                return;
            }
            cb(null, socket);
        });
        return undefined;           /* the agent waits for cb */
    };
    return pin;
}

/*
 * fetch over the pinned agent (Node's own fetch takes no agent).  A
 * connection served a new key (a renewal) is tried again once, after the
 * new key is attested; one never attested is refused.
 */
function pinnedFetch(pin) {
    const once = (url, { method = 'GET', headers = {}, body } = {}) =>
        new Promise((resolve, reject) => {
            const req = pin.https.request(url, { method, headers,
                                                 agent: pin.agent }, (res) => {
                const chunks = [];
                res.on('data', (c) => chunks.push(c));
                res.on('end', () => {
                    const bytes = Buffer.concat(chunks);
                    resolve({ status: res.statusCode,
                              arrayBuffer: async () => bytes.buffer.slice(
                                  bytes.byteOffset,
                                  bytes.byteOffset + bytes.length) });
                });
                res.on('error', reject);
            });
            req.on('error', reject);
            req.end(body === undefined ? undefined : Buffer.from(body));
        });
    return async (url, options) => {
        try {
            return await once(url, options);
        } catch (e) {
            if (e.code !== 'tls-key-changed') {
                throw e;
            }
            await pin.refresh();
            return once(url, options);
        }
    };
}

/*
 * A fetch for a node's plain HTTP endpoints (url: its base URL) whose
 * every connection is pinned to the TLS key its attestation binds (Node
 * over https only): root and pcrs as for Session.open.  Answers are
 * {status, arrayBuffer()}.
 */
export async function attestedFetch(url, { root, pcrs,
                                           insecureAnyCode = false } = {}) {
    const u = checkScheme(url.replace(/\/$/, ''));
    if (u.protocol !== 'https:' || typeof process === 'undefined'
        || !process.versions?.node) {
        throw new Error('attestedFetch: Node over https only');
    }
    return pinnedFetch(await pinTls(u, root,
                                    checkPcrs(pcrs, insecureAnyCode)));
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
    static async open(url, { app, root, pcrs, insecureAnyCode = false,
                             origin, fetch: doFetch, WebSocket: WS } = {}) {
        const crypto = await webcrypto();
        let f = doFetch || globalThis.fetch.bind(globalThis);
        const privateKey = ed25519.utils.randomPrivateKey();
        const publicKey = ed25519.getPublicKey(privateKey);
        const nonce = randomBytes(crypto, 32);
        const base = url.replace(/\/$/, '');
        const u = checkScheme(base);
        const expected = checkPcrs(pcrs, insecureAnyCode);
        const pin = await pinTls(u, root, expected);
        if (pin !== null && !doFetch) {
            f = pinnedFetch(pin);
        }
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
        const doc = await verifyAttestation(body, { root, nonce,
                                                    pcrs: expected });
        const ud = doc.userData || EMPTY;
        if (ud.length !== 65
            || !equalBytes(ud.subarray(0, 17), SESSION_MARK)
            || !equalBytes(ud.subarray(33), await sha256(crypto, publicKey))
            || !doc.publicKey || doc.publicKey.length !== 32) {
            throw new RpcError('attestation', 'the document does not bind a '
                               + 'session to this client\'s key');
        }
        if (doc.dev) {
            console.warn(`proven: ${base} runs the dev attestation provider `
                         + '(a local node, not an enclave)');
        }
        return new Session({ base, prefix, app, privateKey, publicKey,
                             id: ud.slice(17, 33), serverKey: doc.publicKey,
                             document: doc, fetch: f,
                             origin: origin
                                 || globalThis.location?.origin || '',
                             pin,
                             WebSocket: WS || globalThis.WebSocket });
    }

    constructor(o) {
        Object.assign(this, o);
        this.text = uuid(this.id);
        this.seq = 0;
        this.queue = Promise.resolve();
        this.socket = null;
        this.waiting = [];
    }

    /*
     * Sends {type, data}; resolves with the answer's {result, data}.  One
     * message at a time, in seq order: the node refuses a seq below one
     * it has accepted, so messages sent at once could otherwise overtake
     * each other on the way.
     */
    send(type, data = null) {
        const run = this.queue.then(() => this.sendNow(type, data));
        this.queue = run.catch(() => {});
        return run;
    }

    async sendNow(type, data) {
        const seq = ++this.seq;
        const message = signMessage(this.privateKey, this.id, seq,
                                    { type, data });
        const bytes = this.socket ? await this.sendFrame(message)
                                  : await this.post(message);
        const answer = openMessage(this.serverKey,
                                   await answerAad(this.id, message), bytes);
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

    /*
     * Moves the session onto a WebSocket; messages keep their order.  In
     * Node over https, a node's renewed TLS key is attested and the
     * connection tried once more, as for HTTP requests.
     */
    async connect() {
        try {
            return await this.connectOnce();
        } catch (e) {
            if (!this.pin || e.code !== 'tls-key-changed') {
                throw e;
            }
            await this.pin.refresh();
            return this.connectOnce();
        }
    }

    connectOnce() {
        if (!this.WebSocket) {
            return Promise.reject(new Error('no WebSocket implementation: '
                                            + 'pass one to Session.open'));
        }
        const url = `${this.prefix.replace(/^http/, 'ws')}/rpc/ws?session=`
            + this.text;
        return new Promise((resolve, reject) => {
            /* in Node over https, the `ws` package's socket pinned too */
            const ws = this.pin
                ? new this.WebSocket(url, { agent: this.pin.agent })
                : new this.WebSocket(url);
            ws.binaryType = 'arraybuffer';
            ws.onopen = () => {
                this.socket = ws;
                resolve(this);
            };
            ws.onerror = (event) => reject(
                event?.error?.code === 'tls-key-changed' ? event.error
                    : new Error(`cannot open ${url}`));
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

    /*
     * Proves an identity (an Ed25519 private key, 32 bytes) in this
     * session, of this app and this page's origin only.
     */
    async identify(identityKey) {
        const publicKey = ed25519.getPublicKey(identityKey);
        const r = await this.send('Identify', {
            passkey_prf_public_key_bytes: publicKey,
            session_id_signature_bytes: ed25519.sign(
                identifyMessage(this.app, this.origin, this.id),
                identityKey) });
        this.identity = r.result === 'success' ? publicKey : this.identity;
        return r;
    }

    /*
     * Links an Ethereum address to the identity (identify first), so that
     * the app's calls may use the storage of the NFTs it owns.
     * sign(message) gives the wallet's personal_sign of the text: 65 bytes,
     * or their 0x hex, e.g. (m) => ethereum.request({method:
     * 'personal_sign', params: [m, address]}).
     */
    async linkEthereum(address, sign) {
        if (this.identity === undefined) {
            throw new RpcError('bad_request', 'identify first: an address '
                               + 'is linked to an identity');
        }
        const message = linkEthereumMessage(this.app, this.origin, this.id,
                                            this.identity, address);
        let signature = await sign(message);
        if (typeof signature === 'string') {
            if (!/^0x[0-9a-fA-F]{130}$/.test(signature)) {
                throw new RpcError('bad_request', 'a signature is 65 bytes '
                                   + '(0x and 130 hex digits)');
            }
            signature = fromHex(signature.slice(2));
        }
        return this.send('LinkEthereum', { address, signature });
    }

    /*
     * Links a Radix account to the identity (identify first) with ROLA:
     * the node's challenge (RadixChallenge, single-use) goes to the
     * wallet, whose signed challenge comes back and is checked by the
     * node (and, with a Gateway, the account's owner keys on ledger).
     * prove(challengeHex) gives what the Radix dApp Toolkit's proof of
     * ownership gives: {address, proof: {publicKey, signature, curve}}
     * (hex), for one account.  dAppDefinition: the dApp definition
     * address the wallet was asked with (the page's).
     */
    async linkRadix(dAppDefinition, prove) {
        if (this.identity === undefined) {
            throw new RpcError('bad_request', 'identify first: an account '
                               + 'is linked to an identity');
        }
        const ch = await this.send('RadixChallenge');
        if (ch.result !== 'success') {
            return ch;
        }
        const signed = await prove(hex(ch.data.challenge));
        const p = signed?.proof;
        const hexOk = (t, n) => typeof t === 'string'
            && new RegExp(`^[0-9a-fA-F]{${n}}$`).test(t);
        if (typeof signed?.address !== 'string' || p === undefined
            || !(hexOk(p.publicKey, 64) || hexOk(p.publicKey, 66))
            || !(hexOk(p.signature, 128) || hexOk(p.signature, 130))
            || (p.curve !== 'curve25519' && p.curve !== 'secp256k1')) {
            throw new RpcError('bad_request', 'a signed challenge is {address,'
                               + ' proof: {publicKey, signature, curve}}, '
                               + 'in hex, as the wallet gives it');
        }
        return this.send('LinkRadix', {
            account: signed.address, curve: p.curve,
            public_key: fromHex(p.publicKey), signature: fromHex(p.signature),
            dapp_definition: dAppDefinition });
    }

    /*
     * A new passkey for a new identity: the authenticator makes a
     * discoverable credential for the node's relying party (the page's
     * host), its PRF output derives the identity key, the session is
     * identified with it, and the node keeps the credential for that
     * identity.  Resolves {result, data: {credential_id}, identityKey}.
     * credentials: navigator.credentials (or a stand-in).
     */
    async registerPasskey({ name = 'Proven identity',
                            credentials = globalThis.navigator?.credentials }
                          = {}) {
        const crypto = await webcrypto();
        const ch = await this.send('PasskeyChallenge');
        if (ch.result !== 'success') {
            throw new RpcError('passkey', String(ch.data));
        }
        const { challenge, rp_id: rpId } = ch.data;
        const created = await credentials.create({ publicKey: {
            challenge, rp: { id: rpId, name: 'Proven' },
            user: { id: randomBytes(crypto, 16), name, displayName: name },
            pubKeyCredParams: [{ type: 'public-key', alg: -8 },
                               { type: 'public-key', alg: -7 }],
            authenticatorSelection: { residentKey: 'required',
                                      userVerification: 'required' },
            attestation: 'none',
            extensions: { prf: { eval: { first: PRF_SALT } } } } });
        let prf = prfOutput(created);
        if (prf === null) {
            /* some authenticators answer the PRF only when asked to sign */
            prf = prfOutput(await credentials.get({ publicKey: {
                challenge: randomBytes(crypto, 32), rpId,
                allowCredentials: [{ type: 'public-key',
                                     id: created.rawId }],
                userVerification: 'required',
                extensions: { prf: { eval: { first: PRF_SALT } } } } }));
        }
        if (prf === null) {
            throw new RpcError('passkey', 'this authenticator gives no PRF '
                               + 'output: it cannot hold an identity');
        }
        const identityKey = await identityFromPrf(prf);
        const who = await this.identify(identityKey);
        if (who.result !== 'success') {
            throw new RpcError('passkey', String(who.data));
        }
        const r = await this.send('RegisterPasskey', {
            client_data_json: new Uint8Array(created.response.clientDataJSON),
            attestation_object: new Uint8Array(
                created.response.attestationObject) });
        return { ...r, identityKey };
    }

    /*
     * Signs the session in with a passkey the node knows: it becomes the
     * identity that registered it.  Resolves {result, data: {identity},
     * identityKey}: the key the PRF derives when this authenticator gives
     * it and it is that identity's, else null (a copy of the credential
     * elsewhere may hold no PRF secret).
     */
    async loginPasskey({ credentials = globalThis.navigator?.credentials }
                       = {}) {
        const ch = await this.send('PasskeyChallenge');
        if (ch.result !== 'success') {
            throw new RpcError('passkey', String(ch.data));
        }
        const got = await credentials.get({ publicKey: {
            challenge: ch.data.challenge, rpId: ch.data.rp_id,
            userVerification: 'required',
            extensions: { prf: { eval: { first: PRF_SALT } } } } });
        const r = await this.send('LoginPasskey', {
            credential_id: new Uint8Array(got.rawId),
            client_data_json: new Uint8Array(got.response.clientDataJSON),
            authenticator_data: new Uint8Array(
                got.response.authenticatorData),
            signature: new Uint8Array(got.response.signature) });
        let identityKey = null;
        if (r.result === 'success') {
            this.identity = new Uint8Array(r.data.identity);
            const prf = prfOutput(got);
            const key = prf && await identityFromPrf(prf);
            identityKey = key && equalBytes(ed25519.getPublicKey(key),
                                            this.identity) ? key : null;
        }
        return { ...r, identityKey };
    }

    anonymize() {
        this.identity = undefined;
        return this.send('Anonymize');
    }

    /* handler: "PATH#NAME" or "file:///PATH#NAME". */
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
