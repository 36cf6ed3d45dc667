// A client of sessions and signed RPC written from the Protocol v2 section
// of the issue alone (no code of ours): CBOR from cborg, keys and
// signatures from node:crypto, WebSocket frames by hand over node:net so
// that tests can also send what a library would refuse to.

import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';

import * as cbor from '../../runtime/node_modules/cborg/cborg.js';

const SESSION_MARK = Buffer.from('proven-session-v1');
const IDENTIFY_MARK = Buffer.from('proven-identify-v1');
const sha256 = (b) => crypto.createHash('sha256').update(b).digest();

// The protected header: the canonical {1: -8, "seq": n} (EdDSA).
export function protectedHeader(seq) {
    return cbor.encode(new Map([[1, -8], ['seq', seq]]));
}
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export function ed25519Public(raw) {
    return crypto.createPublicKey({
        key: Buffer.concat([ED25519_SPKI_PREFIX, Buffer.from(raw)]),
        format: 'der', type: 'spki' });
}

export function newKeyPair() {
    const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519');
    const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(12);
    return { publicKey, privateKey, raw: new Uint8Array(raw) };
}

export function uuidText(id) {
    const h = Buffer.from(id).toString('hex');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-`
        + `${h.slice(16, 20)}-${h.slice(20)}`;
}

function sigStructure(prot, aad, payload) {
    return cbor.encode(['Signature1', prot, aad, payload]);
}

// COSE_Sign1 [bstr({1: -8, "seq": n}), {}, payload, signature] over aad.
export function sign(privateKey, aad, seq, body) {
    const prot = protectedHeader(seq);
    const payload = cbor.encode(body);
    const signature = crypto.sign(null, sigStructure(prot, aad, payload),
                                  privateKey);
    return cbor.encode([prot, new Map(), payload,
                        new Uint8Array(signature)]);
}

// An answer's external AAD: the session id, SHA-256 of the request's bytes.
export function answerAad(id, request) {
    return Buffer.concat([Buffer.from(id), sha256(request)]);
}

// The answer's {seq, body} once its signature checks with publicKey over
// aad (answerAad of the request it must answer).
export function open(publicKey, aad, bytes) {
    const msg = cbor.decode(bytes, { useMaps: true });
    if (!Array.isArray(msg) || msg.length !== 4) {
        throw new Error('not a COSE_Sign1 array');
    }
    const [prot, unprot, payload, signature] = msg;
    const header = cbor.decode(prot, { useMaps: true });
    const seq = header.get('seq');
    if (header.size !== 2 || header.get(1) !== -8
        || !Number.isSafeInteger(seq)
        || Buffer.compare(Buffer.from(prot),
                          Buffer.from(protectedHeader(seq))) !== 0) {
        throw new Error('protected header is not {1: -8, "seq": n}');
    }
    if (!(unprot instanceof Map) || unprot.size !== 0) {
        throw new Error('the unprotected header is not {}');
    }
    if (!crypto.verify(null, sigStructure(prot, aad, payload), publicKey,
                       signature)) {
        throw new Error('the answer is not signed by the session key over '
                        + 'this request');
    }
    return { seq, body: cbor.decode(payload) };
}

// What an identity key signs to Identify in session s.
export function identifyMessage(s, { app = s.app || '', origin = s.origin
                                     || '' } = {}) {
    const a = Buffer.from(app);
    const o = Buffer.from(origin);
    return Buffer.concat([IDENTIFY_MARK, Buffer.from([a.length]), a,
                          Buffer.from([o.length]), o, Buffer.from(s.id)]);
}

// Identify's data for identity keys {privateKey, raw} in session s.
export function identifyData(s, keys, opts) {
    return {
        passkey_prf_public_key_bytes: keys.raw,
        session_id_signature_bytes: new Uint8Array(crypto.sign(
            null, identifyMessage(s, opts), keys.privateKey)) };
}

// The PCRs the tests expect: 0, 1 and 2 from the node's own status, read
// over its local socket ($PROVEN_STATUS, `proven status` output).
export function expectedPcrs() {
    const status = JSON.parse(fs.readFileSync(process.env.PROVEN_STATUS,
                                              'utf8'));
    const all = status.pcrs;
    return { 0: all['0'], 1: all['1'], 2: all['2'] };
}

// ---- the attestation document --------------------------------------------

// Checks the document (COSE_Sign1 ES384, certificate chain to rootPem) and
// returns its payload fields.
export function checkDocument(bytes, rootPem) {
    const tags = [];
    tags[18] = (v) => v;                 /* COSE_Sign1, tagged or not */
    const [prot, , payload, signature] = cbor.decode(bytes, { tags });
    /* pcrs has integer keys: a Map, then the text keys as fields */
    const fields = Object.fromEntries(cbor.decode(payload, { useMaps: true }));
    const leaf = new crypto.X509Certificate(Buffer.from(fields.certificate));
    const chain = [leaf, ...fields.cabundle.slice().reverse().map(
        (der) => new crypto.X509Certificate(Buffer.from(der)))];
    const root = new crypto.X509Certificate(rootPem);
    for (let i = 0; i < chain.length; i++) {
        const issuer = i + 1 < chain.length ? chain[i + 1] : root;
        if (!chain[i].verify(issuer.publicKey)) {
            throw new Error(`certificate ${i} is not signed by its issuer`);
        }
    }
    const tbs = cbor.encode(['Signature1', prot, new Uint8Array(0),
                             payload]);
    if (!crypto.verify('sha384', tbs, { key: leaf.publicKey,
                                        dsaEncoding: 'ieee-p1363' },
                       signature)) {
        throw new Error('the document signature does not verify');
    }
    return fields;
}

// ---- HTTP ------------------------------------------------------------------

export async function createSession(base, { app, origin, rootPem,
                                            pcrs = expectedPcrs(),
                                            multipart = false } = {}) {
    const keys = newKeyPair();
    const nonce = crypto.randomBytes(32);
    const url = app ? `${base}/app/${app}/session` : `${base}/session`;
    const headers = origin ? { origin } : {};
    let body;
    if (multipart) {
        const form = new FormData();
        form.append('nonce', new Blob([nonce]));
        form.append('public_key', new Blob([keys.raw]));
        body = form;
    } else {
        headers['content-type'] = 'application/cbor';
        body = cbor.encode({ nonce: new Uint8Array(nonce),
                             public_key: keys.raw });
    }
    const res = await fetch(url, { method: 'POST', headers, body });
    if (res.status !== 200) {
        const e = new Error(`session: ${res.status} ${await res.text()}`);
        e.status = res.status;
        throw e;
    }
    const fields = checkDocument(new Uint8Array(await res.arrayBuffer()),
                                 rootPem);
    return sessionFrom(base, { app, origin, keys, nonce, pcrs }, fields);
}

// The session a checked document opens for us, or an error: our nonce,
// user_data the mark, an id and the hash of our key, the expected PCRs.
export function sessionFrom(base, { app, origin, keys, nonce, pcrs },
                            fields) {
    if (!fields.nonce
        || Buffer.compare(Buffer.from(fields.nonce), nonce) !== 0) {
        throw new Error('the document does not carry our nonce');
    }
    const ud = Buffer.from(fields.user_data || []);
    if (ud.length !== 65 || ud.compare(SESSION_MARK, 0, 17, 0, 17) !== 0
        || ud.subarray(33).compare(sha256(keys.raw)) !== 0) {
        throw new Error('user_data does not bind a session to our key');
    }
    for (const [index, want] of Object.entries(pcrs)) {
        const got = fields.pcrs.get(Number(index));
        if (!got || Buffer.from(got).toString('hex') !== want) {
            throw new Error(`PCR ${index} is not the expected one`);
        }
    }
    if (!fields.public_key || fields.public_key.length !== 32) {
        throw new Error('the document binds no 32-byte session key');
    }
    const id = new Uint8Array(ud.subarray(17, 33));
    return { base, app, origin, keys, id, text: uuidText(id), seq: 0,
             serverKey: ed25519Public(fields.public_key), fields };
}

function rpcPath(s, kind) {
    return `${s.app ? `/app/${s.app}` : ''}/rpc/${kind}?session=${s.text}`;
}

// POSTs a signed message: {status, answer} (answer checked) or {status,
// error} for an unsigned refusal.
export async function postMessage(s, bytes) {
    const res = await fetch(s.base + rpcPath(s, 'http'), {
        method: 'POST', headers: { 'content-type': 'application/cbor' },
        body: bytes });
    const data = new Uint8Array(await res.arrayBuffer());
    if (res.status !== 200) {
        const text = Buffer.from(data).toString();
        let error;
        try {
            error = JSON.parse(text).error;
        } catch {
            error = { code: 'not_json', message: text };
        }
        return { status: res.status, type: res.headers.get('content-type'),
                 error };
    }
    return { status: 200,
             answer: open(s.serverKey, answerAad(s.id, bytes), data) };
}

export function command(s, type, data = null, seq = ++s.seq) {
    return sign(s.keys.privateKey, s.id, seq, { type, data });
}

export async function call(s, type, data = null) {
    const seq = ++s.seq;
    const message = command(s, type, data, seq);
    s.last = message;
    const r = await postMessage(s, message);
    if (r.status === 200 && (r.answer.seq !== seq
                             || r.answer.body.type !== type)) {
        throw new Error('the answer is not for this message');
    }
    return r;
}

// ---- WebSocket, by hand -----------------------------------------------------

export function frame(opcode, payload, { fin = true, mask = true,
                                         rsv = 0 } = {}) {
    const len = payload.length;
    const head = [(fin ? 0x80 : 0) | rsv | opcode];
    const ext = [];
    if (len < 126) {
        head.push((mask ? 0x80 : 0) | len);
    } else if (len < 65536) {
        head.push((mask ? 0x80 : 0) | 126);
        ext.push(len >> 8, len & 255);
    } else {
        head.push((mask ? 0x80 : 0) | 127);
        const b = Buffer.alloc(8);
        b.writeBigUInt64BE(BigInt(len));
        ext.push(...b);
    }
    if (!mask) {
        return Buffer.concat([Buffer.from(head), Buffer.from(ext),
                              Buffer.from(payload)]);
    }
    const key = crypto.randomBytes(4);
    const body = Buffer.from(payload).map((b, i) => b ^ key[i & 3]);
    return Buffer.concat([Buffer.from(head), Buffer.from(ext), key, body]);
}

export class RawSocket {
    static async open(s, { port, host = '127.0.0.1', path } = {}) {
        const sock = new RawSocket();
        await sock.connect(port, host, path ?? rpcPath(s, 'ws'));
        return sock;
    }

    connect(port, host, path) {
        this.buf = Buffer.alloc(0);
        this.waiters = [];
        this.closed = false;
        return new Promise((resolve, reject) => {
            this.socket = net.connect(port, host, () => {
                this.socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\n`
                    + 'Upgrade: websocket\r\nConnection: Upgrade\r\n'
                    + `Sec-WebSocket-Key: ${crypto.randomBytes(16)
                        .toString('base64')}\r\n`
                    + 'Sec-WebSocket-Version: 13\r\n\r\n');
            });
            this.socket.on('error', reject);
            this.socket.on('close', () => {
                this.closed = true;
                this.wake();
            });
            this.socket.on('data', (d) => {
                this.buf = Buffer.concat([this.buf, d]);
                if (this.status === undefined) {
                    const end = this.buf.indexOf('\r\n\r\n');
                    if (end < 0) {
                        return;
                    }
                    this.head = this.buf.subarray(0, end).toString();
                    this.status = Number(this.head.split(' ')[1]);
                    this.buf = this.buf.subarray(end + 4);
                    resolve();
                }
                this.wake();
            });
        });
    }

    wake() {
        const w = this.waiters;
        this.waiters = [];
        w.forEach((f) => f());
    }

    send(bytes) {
        this.socket.write(bytes);
    }

    // The next frame from the server: {opcode, payload}, or null once the
    // connection is closed.
    async next(timeoutMs = 5000) {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
            const f = this.parse();
            if (f) {
                return f;
            }
            if (this.closed) {
                return null;
            }
            if (Date.now() > deadline) {
                throw new Error('no frame in time');
            }
            await new Promise((r) => {
                this.waiters.push(r);
                setTimeout(r, 50);
            });
        }
    }

    parse() {
        const b = this.buf;
        if (b.length < 2) {
            return null;
        }
        let len = b[1] & 0x7f;
        let off = 2;
        if (len === 126) {
            if (b.length < 4) {
                return null;
            }
            len = b.readUInt16BE(2);
            off = 4;
        } else if (len === 127) {
            if (b.length < 10) {
                return null;
            }
            len = Number(b.readBigUInt64BE(2));
            off = 10;
        }
        if (b.length < off + len) {
            return null;
        }
        const f = { opcode: b[0] & 0x0f, fin: !!(b[0] & 0x80),
                    payload: new Uint8Array(b.subarray(off, off + len)) };
        this.buf = b.subarray(off + len);
        return f;
    }

    // A signed message and its checked answer (or the refusal's JSON).
    async call(s, type, data = null) {
        const seq = ++s.seq;
        const message = command(s, type, data, seq);
        this.send(frame(2, message));
        const f = await this.next();
        if (f === null) {
            throw new Error('closed');
        }
        if (f.opcode === 1) {
            return { refusal: JSON.parse(Buffer.from(f.payload)).error };
        }
        const answer = open(s.serverKey, answerAad(s.id, message),
                            f.payload);
        if (answer.seq !== seq || answer.body.type !== type) {
            throw new Error('the answer is not for this message');
        }
        return { answer };
    }

    end() {
        this.socket.destroy();
    }
}

export function closeCode(f) {
    return f && f.opcode === 8 && f.payload.length >= 2
        ? (f.payload[0] << 8) | f.payload[1] : null;
}
