// An authenticator written from the WebAuthn specification, for the
// tests (passkey.test.mjs, passkey-cluster.mjs): one credential, P-256
// (ES256) or Ed25519, attestation "none"; what it answers can be bent as
// a page of another origin, a copy behind on its counter, or an
// authenticator that did not verify its user would answer.

import crypto from 'node:crypto';

import * as cbor from '../../runtime/node_modules/cborg/cborg.js';

const sha256 = (b) => crypto.createHash('sha256').update(b).digest();
const b64url = (b) => Buffer.from(b).toString('base64url');

/* An authenticator holding one credential. */
export class Authenticator {
    constructor(kind = 'ec', { origin = 'https://dapp.example',
                              rpId = 'dapp.example' } = {}) {
        this.origin = origin;
        this.rpId = rpId;
        this.kind = kind;
        this.keys = kind === 'ec'
            ? crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
            : crypto.generateKeyPairSync('ed25519');
        this.id = crypto.randomBytes(16);
        this.count = 0;
    }

    coseKey() {
        const jwk = this.keys.publicKey.export({ format: 'jwk' });
        const x = Buffer.from(jwk.x, 'base64url');
        return cbor.encode(this.kind === 'ec'
            ? new Map([[1, 2], [3, -7], [-1, 1], [-2, x],
                       [-3, Buffer.from(jwk.y, 'base64url')]])
            : new Map([[1, 1], [3, -8], [-1, 6], [-2, x]]));
    }

    head(rpId, flags, count) {
        const c = Buffer.alloc(4);
        c.writeUInt32BE(count);
        return Buffer.concat([sha256(rpId), Buffer.from([flags]), c]);
    }

    clientData(type, ch, o = this.origin) {
        return Buffer.from(JSON.stringify({ type, challenge: b64url(ch),
                                            origin: o, crossOrigin: false }));
    }

    /* RegisterPasskey's data */
    create(ch, { rpId = this.rpId, flags = 0x45, o = this.origin,
                 fmt = 'none' } = {}) {
        const len = Buffer.alloc(2);
        len.writeUInt16BE(this.id.length);
        const authData = Buffer.concat([this.head(rpId, flags, 0),
                                        Buffer.alloc(16), len, this.id,
                                        this.coseKey()]);
        return { client_data_json: this.clientData('webauthn.create', ch, o),
                 attestation_object: cbor.encode({ fmt, attStmt: {},
                                                   authData }) };
    }

    /* LoginPasskey's data, the counter moved on unless told */
    get(ch, { rpId = this.rpId, flags = 0x05, o = this.origin,
              count = ++this.count } = {}) {
        const authData = this.head(rpId, flags, count);
        const cd = this.clientData('webauthn.get', ch, o);
        const signed = Buffer.concat([authData, sha256(cd)]);
        const signature = this.kind === 'ec'
            ? crypto.sign('sha256', signed, this.keys.privateKey)
            : crypto.sign(null, signed, this.keys.privateKey);
        return { credential_id: this.id, client_data_json: cd,
                 authenticator_data: authData, signature };
    }

    /* its credential as JSON, and back: a test keeps it across processes */
    save() {
        return JSON.stringify({ kind: this.kind, id: this.id.toString('hex'),
                                count: this.count, origin: this.origin,
                                rpId: this.rpId,
                                key: this.keys.privateKey.export({
                                    format: 'jwk' }) });
    }

    static load(text) {
        const o = JSON.parse(text);
        const a = new Authenticator(o.kind, o);
        const privateKey = crypto.createPrivateKey({ key: o.key,
                                                     format: 'jwk' });
        a.keys = { privateKey,
                   publicKey: crypto.createPublicKey(privateKey) };
        a.id = Buffer.from(o.id, 'hex');
        a.count = o.count;
        return a;
    }
}
