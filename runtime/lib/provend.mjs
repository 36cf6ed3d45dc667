// The worker's own line to provend: a socket pair provend made (an inherited
// fd), on which provend serves kv.* and sql.* of this app only.  Requests
// carry the app's scope; provend refuses any other.

import net from 'node:net';

import { encodeFrame, FrameReader } from './frames.mjs';

const PENDING_MAX = 4096;
const OPENED_CALLS_MAX = 256;

export class ProvendLine {
    constructor(fd, app) {
        this.app = app;
        this.nextId = 1;
        this.pending = new Map();
        this.opened = new Map();        /* grant -> NFTs opened */
        this.closed = false;
        this.socket = new net.Socket({ fd, readable: true, writable: true });
        const reader = new FrameReader((f) => this.answer(f),
                                       (e) => this.close(e.message));
        this.socket.on('data', (chunk) => reader.push(chunk));
        this.socket.on('error', (e) => this.close(e.message));
        this.socket.on('close', () => this.close('provend closed the line'));
    }

    // request: {op, ...arguments} without scope; resolves with the result.
    // An NFT's storage ("nft": {contract, token, owners_slot?,
    // confirmations?}, or a Radix one's {resource, token}) is opened
    // first, once a call: provend checks the owner is an address or
    // account the call's session linked.
    async call(request) {
        const { personal, nft, caller, ...args } = request;
        if ((personal || nft) && !caller) {
            throw { code: 'unavailable', message: `${personal ? 'personal'
                    : 'NFT'} storage is for calls from an identified `
                    + 'session' };
        }
        if (args.op === 'session.links') {
            /* a call no session made: nobody's */
            return caller ? this.send({ op: 'session.links',
                                        grant: caller.grant,
                                        scope: { app: this.app } })
                          : { identity: null, ethereum: [], radix: [] };
        }
        if (personal) {
            return this.send({ ...args, grant: caller.grant,
                               scope: { app: this.app, kind: 'personal',
                                        identity: caller.identity } });
        }
        if (nft) {
            const { chain, contract } = await this.openNft(caller, nft);
            return this.send({ ...args, grant: caller.grant,
                               scope: { app: this.app, kind: 'nft', nft: {
                                   chain, contract, token: nft.token } } });
        }
        return this.send({ ...args, scope: { app: this.app } });
    }

    // The chain and contract the NFT's scope names ({chain, contract}),
    // once its owner is proved for this call (kept per call: the grant
    // holds it until the call answers).
    openNft(caller, nft) {
        let opened = this.opened.get(caller.grant);
        if (opened === undefined) {
            /* the calls of late: a grant ends with its call */
            if (this.opened.size >= OPENED_CALLS_MAX) {
                this.opened.delete(this.opened.keys().next().value);
            }
            opened = new Map();
            this.opened.set(caller.grant, opened);
        }
        const key = JSON.stringify([nft.contract ?? nft.resource, nft.token,
                                    nft.owners_slot ?? null,
                                    nft.confirmations ?? null]);
        let chain = opened.get(key);
        if (chain === undefined && nft.resource !== undefined) {
            chain = this.send({ op: 'radix.nft', grant: caller.grant,
                                resource: nft.resource, nf_id: nft.token,
                                scope: { app: this.app } })
                .then((r) => ({ chain: r.chain, contract: r.contract }));
            chain.catch(() => opened.delete(key));
            opened.set(key, chain);
        }
        if (chain === undefined) {
            const args = { op: 'nft.open', grant: caller.grant,
                           contract: nft.contract, token: nft.token };
            if (nft.owners_slot !== undefined) {
                args.owners_slot = nft.owners_slot;
            }
            if (nft.confirmations !== undefined) {
                args.confirmations = nft.confirmations;
            }
            chain = this.send({ ...args, scope: { app: this.app } })
                .then((r) => ({ chain: r.chain, contract: r.contract }));
            chain.catch(() => opened.delete(key));
            opened.set(key, chain);
        }
        return chain;
    }

    send(frame) {
        if (this.closed) {
            return Promise.reject({ code: 'unavailable',
                                    message: 'provend is unreachable' });
        }
        if (this.pending.size >= PENDING_MAX) {
            return Promise.reject({ code: 'busy', message: 'too many storage '
                                    + 'requests in flight' });
        }
        const id = this.nextId++;
        frame.id = id;
        return new Promise((resolve, reject) => {
            this.pending.set(id, { resolve, reject });
            try {
                this.socket.write(encodeFrame(frame));
            } catch (e) {
                this.pending.delete(id);
                reject({ code: 'bad_request', message: e.message });
            }
        });
    }

    answer(f) {
        const p = this.pending.get(f.id);
        if (p === undefined) {
            return;
        }
        this.pending.delete(f.id);
        if (f.ok) {
            p.resolve(f.result);
        } else {
            p.reject(f.error || { code: 'internal', message: 'no error' });
        }
    }

    close(why) {
        if (this.closed) {
            return;
        }
        this.closed = true;
        for (const p of this.pending.values()) {
            p.reject({ code: 'unavailable', message: `provend: ${why}` });
        }
        this.pending.clear();
        this.socket.destroy();
    }
}
