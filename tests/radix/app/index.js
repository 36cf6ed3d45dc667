// The app tests/radix/nft.test.mjs calls (deployed by tests/rpc.sh as
// "rnotes"): a note per Radix non-fungible, that only a session which
// linked the account holding it reads or writes.

import { run } from '@proven-network/handler';
import { getNftStore } from '@proven-network/kv';
import { getCurrentAccounts, getCurrentIdentity } from '@proven-network/session';

const notes = getNftStore('notes');

export const writeNote = run(async (resource, id, text) => {
    await notes.set({ resource, id }, 'note', text);
    return 'written';
});

export const readNote = run(async (resource, id) =>
    (await notes.get({ resource, id }, 'note')) ?? null);

// Who the call runs for, and the accounts its session linked.
export const whoami = run(async () => ({
    identity: await getCurrentIdentity(),
    accounts: await getCurrentAccounts(),
}));
