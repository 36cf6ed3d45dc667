#!/bin/bash
# NFT scopes (daemon/chains/nft.c, LinkEthereum) and examples/nft-notes on
# a local node (nginx-conf/run-local.sh) that follows ganache (npm,
# tests/chains) through an endpoint that lies as the host could
# (tests/chains/liar.mjs): an ERC-721 (tests/chains/contracts/
# TestTokens.sol, compiled with solc from npm) whose transfers the app
# counts and whose tokens' notes only their owners read.  The cases are
# tests/chains/nft.test.mjs, a client written from the protocol.
# Usage: tests/nft.sh BUILD_DIR   (KEEP_WORK=1 keeps the logs and data)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-build}" && pwd)
work=$(mktemp -d)
pids=()
node_pid=

. "$(dirname "$0")/lib.sh"

cleanup() {
    local p
    if [ -n "$node_pid" ]; then
        kill -TERM "$node_pid" 2>/dev/null
        wait "$node_pid" 2>/dev/null
    fi
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
    wait 2>/dev/null
    [ -n "${KEEP_WORK:-}" ] && echo "# kept $work" || rm -rf "$work"
}
trap cleanup EXIT

base=$(port_block 4)
chain=$base liar=$((base + 1))
export PROVEN_DATA=$work/data PROVEN_BUILD=$build
export PROVEN_HTTP_PORT=$((base + 2)) PROVEN_HTTPS_PORT=$((base + 3))

spawn() {   # spawn NAME CMD...
    local name=$1; shift
    "$@" >>"$work/$name.log" 2>&1 &
    pids+=($!)
}

echo none >"$work/mode"
spawn ganache node "$top/tests/chains/ganache.mjs" "$chain" "$work/chain.json"
spawn liar node "$top/tests/chains/liar.mjs" "$liar" "$chain" "$work/mode"
for _ in $(seq 1 200); do
    [ -s "$work/chain.json" ] && break
    sleep 0.05
done
checkpoint=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).checkpoint)' "$work/chain.json")
contract=$(node "$top/tests/chains/tokens.mjs" "$chain" deploy \
           "$work/tokens.json") || { echo "# the contract did not deploy"; exit 1; }

# the node follows the chain (a block every 200 ms asked for)
export PROVEN_PROVEND_ARGS="--eth-rpc http://127.0.0.1:$liar \
    --eth-checkpoint $checkpoint --eth-chain-id 1337 --eth-poll-ms 200 \
    --app-workers 1"
setsid "$top/nginx-conf/run-local.sh" >>"$work/node.log" 2>&1 &
node_pid=$!
for _ in $(seq 1 250); do
    curl -sf "http://127.0.0.1:$PROVEN_HTTP_PORT/" >/dev/null 2>&1 && break
    sleep 0.04
done

# examples/nft-notes, following the contract just deployed; and, for the
# tests only, a handler of an NFT's SQL database
mkdir -p "$work/app"
cp "$top/examples/nft-notes/index.js" "$work/app/"
cat >"$work/app/contract.js" <<JS
export const CONTRACT = '$contract';
export const CONFIRMATIONS = 2;
JS
cat >>"$work/app/index.js" <<'JS'

import { getNftDb } from '@proven-network/sql';
import { runWithOptions } from '@proven-network/handler';
const visits = getNftDb('visits', { confirmations: CONFIRMATIONS }).migrate(
    'CREATE TABLE visits (n INTEGER NOT NULL)');
export const visit = run(async (token) => {
    const nft = { contract: CONTRACT, token };
    await visits.execute(nft, 'INSERT INTO visits (n) VALUES (1)');
    const [row] = await visits.query(nft, 'SELECT count(*) AS n FROM visits');
    return row.n;
});
export const readCode = run(async (token) => {
    try {
        await notes.get({ contract: CONTRACT, token }, 'note');
        return 'ok';
    } catch (e) {
        return e.code;
    }
});
// a store that takes TestTokens' approvals (slot 4) for its owners: its
// own scope, never the notes of the owners mapping's
const approvedNotes = getNftStore('notes', { ownersSlot: 4,
                                             confirmations: CONFIRMATIONS });
export const readAsApproved = run(async (token) => {
    const note = await approvedNotes.get({ contract: CONTRACT, token }, 'note');
    return note === undefined ? null : note;
});
export const writeAsApproved = run(async (token, text) => {
    await approvedNotes.set({ contract: CONTRACT, token }, 'note', text);
    return true;
});
// many tokens at once: what each open came to
export const flood = runWithOptions({ timeout: 60000 }, async (first, n) => {
    const tokens = Array.from({ length: n }, (_, i) => first + i);
    const got = await Promise.allSettled(tokens.map((token) =>
        notes.get({ contract: CONTRACT, token }, 'note')));
    const count = {};
    for (const g of got) {
        const code = g.status === 'fulfilled' ? 'ok' : g.reason.code;
        count[code] = (count[code] || 0) + 1;
    }
    return count;
});
export const badNft = run(() => visits.query({ contract: 'nope', token: 1 },
                                             'SELECT 1'));
JS
"$build/bin/proven" app deploy "$work/app" --app notes \
    >"$work/deploy.log" 2>&1 || {
    echo "# the node or the deploy failed:"; tail -20 "$work/node.log" \
        "$work/deploy.log"; exit 1; }
for _ in $(seq 1 250); do
    "$build/bin/proven" app list 2>/dev/null \
        | grep -q '"app":"notes".*"sockets":\["' && break
    sleep 0.04
done

export PROVEN_URL=http://127.0.0.1:$PROVEN_HTTP_PORT
export PROVEN_ROOT=$PROVEN_DATA/attestation/dev-root.pem
"$build/bin/proven" status >"$work/status.json"
export PROVEN_STATUS=$work/status.json
export NFT_CHAIN_PORT=$chain NFT_TOKENS=$work/tokens.json
export NFT_MODE=$work/mode NFT_SOCKET=$PROVEN_DATA/provend.sock
rc=0
node --test-reporter=spec --test "$top/tests/chains/nft.test.mjs" || rc=1
[ $rc = 0 ] || { echo "# node log:"; tail -30 "$work/node.log" | cut -c1-300; }

# the chain is the operator's to name: an endpoint that says another
# chain than --eth-chain-id is not followed (NFT scopes are named by it)
"$build/bin/provend" --data "$work/other" --provider dev \
    --eth-rpc "http://127.0.0.1:$chain" --eth-checkpoint "$checkpoint" \
    --eth-chain-id 1 --eth-poll-ms 200 >"$work/other.log" 2>&1 &
pids+=($!)
said=
for _ in $(seq 1 100); do
    said=$(node "$top/tests/call.mjs" "unix:$work/other/provend.sock" \
           eth.events 2>/dev/null | grep -o 'the endpoint says chain 1337; --eth-chain-id is 1')
    [ -n "$said" ] && break
    sleep 0.1
done
# in an enclave a plain endpoint is refused: the host could answer for it
"$build/bin/provend" --data "$work/tls" --provider dev \
    --eth-rpc "http://127.0.0.1:$chain" --eth-checkpoint "$checkpoint" \
    --eth-tls required >"$work/tls.log" 2>&1
if [ $? = 2 ] && grep -q 'an https:// endpoint is required' "$work/tls.log"
then
    echo "ok - --eth-tls required (an enclave's default): http:// refused"
else
    echo "not ok - --eth-tls required (an enclave's default): http:// refused"
    rc=1
fi
if [ -n "$said" ]; then
    echo "ok - an endpoint naming another chain than --eth-chain-id is not followed"
else
    echo "not ok - an endpoint naming another chain than --eth-chain-id is not followed"
    rc=1
fi
exit $rc
