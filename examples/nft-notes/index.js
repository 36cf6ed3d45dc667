// examples/nft-notes: an ERC-721's transfers counted, and a note per token
// that only the token's owner reads or writes.  Set the contract in
// contract.js, then deploy to a node that follows the chain
// (provend --eth-rpc URL --eth-checkpoint HASH):
//
//   proven app deploy examples/nft-notes --app notes
//
//   curl http://127.0.0.1:8080/app/notes/transfers      # {"total":3,...}
//   curl http://127.0.0.1:8080/app/notes/transfers/7    # {"token":"7",...}
//
// Notes go through a session (the SDK): identify, link the wallet that
// holds the token (session.linkEthereum), then
//
//   session.execute('index.js#writeNote', 7, 'for whoever holds #7')
//   session.execute('index.js#readNote', 7)
//
// The node proves who owns the token (a storage proof of the contract's
// owners mapping at a block linked to its checkpoint) on every call; a
// note stays with its token: once a transfer is CONFIRMATIONS deep, the
// new owner reads it and the old one is refused ("not_owner").

import { run, runOnEthereumEvent, runOnHttp } from '@proven-network/handler';
import { getNftStore } from '@proven-network/kv';
import { getApplicationDb } from '@proven-network/sql';

import { CONFIRMATIONS, CONTRACT } from './contract.js';

const NOTE_MAX = 4096;

const ledger = getApplicationDb('ledger').migrate(
    'CREATE TABLE transfers (block_hash TEXT NOT NULL, '
    + 'log_index INTEGER NOT NULL, block INTEGER NOT NULL, '
    + 'token TEXT NOT NULL, sender TEXT NOT NULL, receiver TEXT NOT NULL, '
    + 'PRIMARY KEY (block_hash, log_index))');

const notes = getNftStore('notes', { confirmations: CONFIRMATIONS });

// Each transfer once: an event may come again (at least once), never
// counted twice, as (block hash, log index) names it.
export const transferred = runOnEthereumEvent({
    address: CONTRACT,
    event: 'Transfer(address indexed from, address indexed to, '
        + 'uint256 indexed tokenId)',
    confirmations: CONFIRMATIONS,
}, async (e) => {
    if (e.args === null) {
        return;     /* an ERC-20's Transfer: another layout, same topic */
    }
    await ledger.execute('INSERT INTO transfers (block_hash, log_index, '
        + 'block, token, sender, receiver) VALUES (?, ?, ?, ?, ?, ?) '
        + 'ON CONFLICT DO NOTHING',
        [e.blockHash, e.logIndex, e.blockNumber, String(e.args.tokenId),
         e.args.from, e.args.to]);
});

export const total = runOnHttp({ path: '/transfers' }, async () => {
    const [all] = await ledger.query('SELECT count(*) AS n, '
        + 'max(block) AS block FROM transfers');
    return { contract: CONTRACT, total: all.n, block: all.block };
});

export const ofToken = runOnHttp({ path: '/transfers/:token' },
    async (req) => {
        const token = req.pathParameters.token;
        if (!/^(0|[1-9][0-9]{0,77})$/.test(token)) {
            return { status: 400, body: { error: 'a token id is decimal' } };
        }
        const moves = await ledger.query('SELECT block, sender, receiver '
            + 'FROM transfers WHERE token = ? ORDER BY block, log_index',
            [token]);
        return { token, transfers: moves.length,
                 owner: moves.length > 0 ? moves.at(-1).receiver : null };
    });

// The token's owner only: anyone else's call is refused by the node.
export const readNote = run(async (token) => {
    const note = await notes.get({ contract: CONTRACT, token }, 'note');
    return note === undefined ? null : note;
});

export const writeNote = run(async (token, text) => {
    if (typeof text !== 'string' || text.length > NOTE_MAX) {
        throw new Error(`a note is a text of ${NOTE_MAX} characters at most`);
    }
    await notes.set({ contract: CONTRACT, token }, 'note', text);
    return true;
});
