// An attacking relay: what the host of a node can do to every byte between
// a client and the node.  It passes everything through (HTTP, and the
// WebSocket upgrade as raw bytes) and, in a mode, attacks:
//
//   hijack       POST /session answered with a genuine document of a
//                session the relay opened itself (its own client key)
//   attestation  POST /session answered with GET /attestation for the
//                client's nonce, user_data the id of a relay session and
//                public_key the relay's key
//   key-swap     the client's public_key in POST /session replaced by the
//                relay's: the node binds the relay's key
//   resequence   each signed request replaced by the client's previous one
//                with its seq rewritten to the new one's (v1 left seq
//                outside the signature)
//   answer-swap  each answer replaced by the answer to the previous
//                request (held back and delivered late)
//
// Modes change at run time: relay.mode = 'hijack'.

import http from 'node:http';
import net from 'node:net';

import * as cbor from '../../runtime/node_modules/cborg/cborg.js';
import * as p from './protocol.mjs';

function readBody(req) {
    return new Promise((resolve) => {
        const chunks = [];
        req.on('data', (c) => chunks.push(c));
        req.on('end', () => resolve(Buffer.concat(chunks)));
    });
}

// The same COSE_Sign1 with its protected header made for seq: the
// signature left as it was (a relay cannot sign).
export function resequence(message, seq) {
    const [, unprot, payload, signature] = cbor.decode(message,
                                                       { useMaps: true });
    return Buffer.from(cbor.encode([p.protectedHeader(seq), unprot, payload,
                                    signature]));
}

function seqOf(message) {
    try {
        const [prot] = cbor.decode(message, { useMaps: true });
        return cbor.decode(prot, { useMaps: true }).get('seq');
    } catch {
        return null;
    }
}

export async function startRelay(target) {
    const up = new URL(target);
    const relay = { mode: 'pass', lastRequest: null, heldAnswer: null };

    async function forward(method, path, headers, body) {
        const res = await fetch(new URL(path, up), {
            method, headers, body: method === 'GET' ? undefined : body });
        return { status: res.status,
                 type: res.headers.get('content-type') || '',
                 body: Buffer.from(await res.arrayBuffer()) };
    }

    // A session of the relay's own, at the same endpoint the client used,
    // for the client's nonce.
    async function relaySession(path, headers, body) {
        const keys = p.newKeyPair();
        const { nonce } = cbor.decode(body);
        const r = await forward('POST', path, headers, cbor.encode({
            nonce, public_key: keys.raw }));
        return { keys, r };
    }

    const server = http.createServer(async (req, res) => {
        let body = await readBody(req);
        const headers = { 'content-type': req.headers['content-type']
                                          || 'application/octet-stream' };
        if (req.headers.origin) {
            headers.origin = req.headers.origin;
        }
        const isSession = req.method === 'POST'
            && /\/session$/.test(req.url);
        const isRpc = req.method === 'POST' && /\/rpc\/http/.test(req.url);
        let out;

        if (isSession && relay.mode === 'hijack') {
            out = (await relaySession(req.url, headers, body)).r;
        } else if (isSession && relay.mode === 'attestation') {
            const { nonce } = cbor.decode(body);
            const mine = await relaySession(req.url, headers, body);
            const tags = [];
            tags[18] = (v) => v;
            const [, , payload] = cbor.decode(mine.r.body, { tags });
            const doc = cbor.decode(payload, { useMaps: true });
            const id = Buffer.from(doc.get('user_data')).subarray(17, 33);
            out = await forward('GET', `/attestation?nonce=${
                Buffer.from(nonce).toString('hex')}&user_data=${
                id.toString('base64url')}&public_key=${
                Buffer.from(mine.keys.raw).toString('base64url')}`, {}, null);
            if (out.status !== 200) {
                throw new Error(`/attestation refused: ${out.body}`);
            }
        } else if (isSession && relay.mode === 'key-swap') {
            const fields = cbor.decode(body);
            fields.public_key = p.newKeyPair().raw;
            out = await forward('POST', req.url, headers, cbor.encode(fields));
        } else if (isRpc && relay.mode === 'resequence'
                   && relay.lastRequest !== null) {
            const forged = resequence(relay.lastRequest, seqOf(body));
            relay.lastRequest = body;
            out = await forward('POST', req.url, headers, forged);
        } else {
            out = await forward(req.method, req.url, headers, body);
            if (isRpc) {
                relay.lastRequest = body;
            }
            if (isRpc && relay.mode === 'answer-swap' && out.status === 200) {
                const fresh = out;
                if (relay.heldAnswer !== null) {
                    out = relay.heldAnswer;
                }
                relay.heldAnswer = fresh;
            }
        }
        res.writeHead(out.status, { 'content-type': out.type });
        res.end(out.body);
    });

    // WebSocket upgrades: bytes both ways, untouched.
    server.on('upgrade', (req, socket, head) => {
        const upstream = net.connect(Number(up.port), up.hostname, () => {
            upstream.write(`${req.method} ${req.url} HTTP/1.1\r\n`
                + Object.entries(req.headers).map(([k, v]) => `${k}: ${v}`)
                    .join('\r\n') + '\r\n\r\n');
            upstream.write(head);
            socket.pipe(upstream).pipe(socket);
        });
        upstream.on('error', () => socket.destroy());
        socket.on('error', () => upstream.destroy());
    });

    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    relay.url = `http://127.0.0.1:${server.address().port}`;
    relay.close = () => new Promise((r) => {
        server.closeAllConnections?.();
        server.close(r);
    });
    return relay;
}
