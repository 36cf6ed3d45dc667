#!/bin/bash
# Apps' runOnEthereumEvent handlers (daemon/chains/follow.c): ganache (npm,
# tests/chains) on loopback, reached through an endpoint that lies as the
# host could (tests/chains/liar.mjs).  Events come once each, in block
# order, after their confirmations; none from before the app was there; a
# restart neither repeats nor skips; a handler that fails holds its
# filter (the rest of its block waits) and is tried again; a block taken
# back by a reorganisation: its event never reaches a handler that waits
# for confirmations, and the new block's event comes with its own hash; a
# receipt altered, cut or padded by the endpoint: nothing delivered until
# the truth is served.
# Usage: tests/events.sh BUILD_DIR   (KEEP_WORK=1 keeps the logs)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-build}" && pwd)
work=$(mktemp -d)
passed=0 failed=0
pids=()

. "$(dirname "$0")/lib.sh"

cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
    wait 2>/dev/null
    [ -n "${KEEP_WORK:-}" ] && echo "# kept $work" || rm -rf "$work"
}
trap cleanup EXIT

base=$(port_block 4)
chain=$base liar=$((base + 1)) liar2=$((base + 2))
data=$work/data
export PROVEN_DATA=$data

spawn() {   # spawn NAME CMD...
    local name=$1; shift
    "$@" >>"$work/$name.log" 2>&1 &
    pids+=($!)
}

spawn ganache node "$top/tests/chains/ganache.mjs" "$chain" "$work/chain.json"
spawn liar node "$top/tests/chains/liar.mjs" "$liar" "$chain" "$work/mode" \
    --block-receipts
# (the cluster's nodes ask one without eth_getBlockReceipts, as ganache)
spawn liar2 node "$top/tests/chains/liar.mjs" "$liar2" "$chain" "$work/mode"
for _ in $(seq 1 200); do
    [ -s "$work/chain.json" ] && break
    sleep 0.05
done
field() { node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1]))[process.argv[2]])' "$work/chain.json" "$1"; }
checkpoint=$(field checkpoint)
emitter=$(field emitter)
drive() { node "$top/tests/chains/drive.mjs" "$chain" "$@"; }
mode() { echo "$1" >"$work/mode"; }
call() { node "$top/tests/call.mjs" "unix:$data/provend.sock" "$@"; }

# on a failure: how the following goes, and provend's last lines
on_fail() {
    call eth.events 2>&1 | cut -c1-600
    tail -5 "$work/provend.log" 2>/dev/null | cut -c1-300
}

start_provend() {
    spawn provend "$build/bin/provend" --data "$data" --provider dev \
        --eth-rpc "http://127.0.0.1:$liar" --eth-checkpoint "$checkpoint" \
        --eth-poll-ms 200 "$@"
    provend_pid=$!
    for _ in $(seq 1 200); do
        [ -S "$data/provend.sock" ] && call eth.events >/dev/null 2>&1 \
            && return
        sleep 0.05
    done
}
stop_provend() {
    kill -TERM "$provend_pid"
    wait "$provend_pid" 2>/dev/null
}

# seen FILTER: the data its handler was given, in the order given, and how
# many times each ("0x01x1 0x02x1 ...")
seen() {
    "$build/bin/proven" sql --app ev --db events --query \
        "SELECT data, times FROM seen WHERE filter = ?1 ORDER BY id" "$1" \
        2>/dev/null \
        | node -e 'let s = ""; process.stdin.on("data", (d) => s += d);
                   process.stdin.on("end", () => console.log(s.trim().split("\n")
                       .filter(Boolean).map((l) => JSON.parse(l))
                       .map((r) => r.data + "x" + r.times).join(" ")));'
}
# the block hash each event of FILTER came with: "DATA=HASH ..."
hashes() {
    "$build/bin/proven" sql --app ev --db events --query \
        "SELECT data, hash FROM seen WHERE filter = ?1 ORDER BY id" "$1" \
        2>/dev/null
}
# seen_one FILTER DATA: DATA's "DATAxTIMES" among what FILTER saw
seen_one() { seen "$1" | grep -o "${2}x[0-9]*" || true; }
# hash_of FILTER DATA: the block hash DATA's event came with
hash_of() { hashes "$1" | grep "\"$2\"" | grep -o '"hash":"0x[0-9a-f]*"'; }
# the filters provend follows
filters() {
    call eth.events | node -e 'let s = ""; process.stdin.on("data", (d) => s += d);
        process.stdin.on("end", () => { const r = JSON.parse(s).result;
            console.log(r.filters.length); });'
}
status_of() {   # status_of HANDLER: error of its filter
    call eth.events | node -e 'let s = ""; process.stdin.on("data", (d) => s += d);
        process.stdin.on("end", () => { const r = JSON.parse(s).result;
            const f = r.filters.find((f) => f.handler === "index.js#" + process.argv[1]);
            console.log(f ? (f.error || "ok") : "none"); });' "$1"
}

# ---- bad options -------------------------------------------------------------

check "a poll under 100 ms is refused at start" 2 -m 'eth-poll-ms' \
    "$build/bin/provend" --data "$work/bad" --provider dev \
    --eth-rpc "http://127.0.0.1:$liar" --eth-checkpoint "$checkpoint" \
    --eth-poll-ms 5

# ---- the app ------------------------------------------------------------------

mode none
topic1=0x$(printf '%064x' 1) topic2=0x$(printf '%064x' 2)
mkdir -p "$work/app"
cat >"$work/app/index.js" <<JS
import { run, runOnEthereumEvent } from '@proven-network/handler';
import { getApplicationDb } from '@proven-network/sql';
import { getApplicationStore } from '@proven-network/kv';

const db = getApplicationDb('events').migrate(
    'CREATE TABLE seen (id INTEGER PRIMARY KEY, filter TEXT NOT NULL, '
    + 'block INTEGER NOT NULL, hash TEXT NOT NULL, log INTEGER NOT NULL, '
    + 'data TEXT NOT NULL, times INTEGER NOT NULL, '
    + 'UNIQUE (filter, hash, log))');
const flags = getApplicationStore('flags');

/* idempotent by (block hash, log index): a second delivery counted */
async function record(filter, e) {
    await db.execute('INSERT INTO seen (filter, block, hash, log, data, times) '
        + 'VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (filter, hash, log) '
        + 'DO UPDATE SET times = times + 1',
        [filter, e.blockNumber, e.blockHash, e.logIndex, e.data]);
}

export const quick = runOnEthereumEvent({ address: '$emitter',
    confirmations: 0 }, async (e) => {
    if (e.data === '0x0e' && (await flags.get('let-0e')) !== 'yes') {
        throw new Error('not yet');
    }
    await record('quick', e);
});
export const deep = runOnEthereumEvent({ address: '$emitter',
    confirmations: 3, topics: ['$topic1'] },
    (e) => record('deep', e));
export const other = runOnEthereumEvent({ address: '$emitter',
    topics: ['$topic2'], confirmations: 0 },
    (e) => record('other', e));
export const mainnet = runOnEthereumEvent({ address: '$emitter',
    chain: 'ethereum', confirmations: 0 }, (e) => record('mainnet', e));
export const ping = run(() => 'pong');
JS

start_provend
drive emit "$emitter" 0x00aa                    # before the app: not its
check "the app deploys" 0 "$build/bin/proven" app deploy "$work/app" --app ev
eventually "its three filters of this chain are followed (not mainnet's)" 3 \
    filters

check "a read deeper than the blocks followed: unavailable, said" 0 \
    -m '"code":"unavailable".*fewer than 128 blocks followed' \
    call eth.account "{\"address\": \"$(field sender)\", \"confirmations\": 128}"

# ---- once each, in order, after confirmations ------------------------------------

drive emit "$emitter" 0x01
eventually "an event comes" "0x01x1" seen quick
same "confirmations: none yet where 3 are wanted" "" seen deep
drive emit "$emitter" 0x02
drive emit-block "$emitter" 0x03 0x04
eventually "events come once each, in block and log order" \
    "0x01x1 0x02x1 0x03x1 0x04x1" seen quick
same "none from before the app was there, none of another topic" "" seen other
drive mine 3
eventually "after 3 blocks more, they come there too" \
    "0x01x1 0x02x1 0x03x1 0x04x1" seen deep
same "another chain's filter gets nothing" "none" status_of mainnet

# ---- a restart -------------------------------------------------------------------

stop_provend
drive emit "$emitter" 0x05
# (600 blocks while it is down: its cursors fall below the 512 blocks it
# keeps, and are carried forward block by block, each linked to the last)
drive mine 600
start_provend
drive emit "$emitter" 0x06
eventually "a restart neither repeats nor skips" \
    "0x01x1 0x02x1 0x03x1 0x04x1 0x05x1 0x06x1" seen quick
check "(the cursors were below the blocks kept)" 0 \
    -m '"first":[1-9][0-9]{2,}' call eth.events
same "none of the filters is held" "ok" status_of quick

# ---- a handler that fails --------------------------------------------------------

drive emit-block "$emitter" 0x0d 0x0e 0x10
eventually "a failing handler holds its filter: the rest of its block waits" \
    "0x01x1 0x02x1 0x03x1 0x04x1 0x05x1 0x06x1 0x0dx1" seen quick
why_of() { status_of "$1" | sed 's/^block [0-9]* //'; }
eventually "and says why" "log 1: the handler: handler_error: Error: not yet" \
    why_of quick
"$build/bin/proven" kv set --app ev --store flags let-0e yes >/dev/null
eventually "tried again, it goes on from where it was held, none twice" \
    "0x01x1 0x02x1 0x03x1 0x04x1 0x05x1 0x06x1 0x0dx1 0x0ex1 0x10x1" \
    seen quick

# ---- a reorganisation -------------------------------------------------------------

drive mine 3
eventually "(the deep filter caught up)" \
    "0x01x1 0x02x1 0x03x1 0x04x1 0x05x1 0x06x1 0x0dx1 0x0ex1 0x10x1" seen deep
snap=$(drive snapshot)
drive emit "$emitter" 0x20
eventually "an event with no confirmation wanted comes at once" \
    "0x01x1 0x02x1 0x03x1 0x04x1 0x05x1 0x06x1 0x0dx1 0x0ex1 0x10x1 0x20x1" \
    seen quick
before=$(hash_of quick 0x20)
drive revert "$snap"
drive emit "$emitter" 0x21
drive mine 3
eventually "the new block's event comes with its own hash" \
    "0x01x1 0x02x1 0x03x1 0x04x1 0x05x1 0x06x1 0x0dx1 0x0ex1 0x10x1 0x20x1 0x21x1" \
    seen quick
eventually "where 3 confirmations are wanted, the taken-back event never comes" \
    "0x01x1 0x02x1 0x03x1 0x04x1 0x05x1 0x06x1 0x0dx1 0x0ex1 0x10x1 0x21x1" \
    seen deep
after=$(hash_of quick 0x21)
check "the two blocks at that height differ" 1 test "$before" = "$after"
check "(both hashes read)" 0 test -n "$before" -a -n "$after"
check "the reorganisation is counted" 0 -m '"reorgs":[1-9]' call eth.events

# ---- reads at a followed block ----------------------------------------------------

sender=$(field sender)
# read_at N: "block nonce" of the sender as eth.account proves it N blocks
# below the followed head
read_at() {
    call eth.account "{\"address\": \"$sender\", \"confirmations\": $1}" \
        | node -e 'let s = ""; process.stdin.on("data", (d) => s += d);
            process.stdin.on("end", () => { const r = JSON.parse(s);
                console.log(r.ok ? r.result.block + " " + r.result.account.nonce
                                 : r.error.code + ": " + r.error.message); });'
}
eventually "an account read at the followed head, proved there" \
    "$(drive head) $(drive nonce "$sender")" read_at 0
check "confirmations over 128: refused" 0 -m '"code":"bad_request".*0 to 128' \
    call eth.account "{\"address\": \"$sender\", \"confirmations\": 129}"
check "the checkpoint's reads stay the checkpoint's" 0 \
    -m "\"block\":$(($(field number))),\"block_hash\":\"$checkpoint\"" \
    call eth.account "{\"address\": \"$sender\"}"

# ---- what the endpoint may alter --------------------------------------------------

n=11
for lie in log-data log-drop log-add; do
    mode "$lie"
    word=$(printf '0x%02x' $((0x30 + n)))
    drive emit "$emitter" "$word"
    drive mine 1
    eventually "a receipt changed ($lie): said, nothing delivered" \
        "block $(($(drive head) - 1)): the receipts are not those of the block: their trie's root is not its receipts root" \
        status_of quick
    same "($lie: the handler saw nothing of it)" "" seen_one quick "$word"
    mode none
    eventually "the truth served, it comes once" "${word}x1" \
        seen_one quick "$word"
    n=$((n + 1))
done
check "(the lies were told, in one eth_getBlockReceipts)" 0 \
    -m 'applied log-add eth_getBlockReceipts' cat "$work/liar.log"

stop_provend

# ---- a cluster: one node at a time delivers ------------------------------------------

# two nodes (nginx-conf/run-cluster.sh), each following the chain; the
# first to claim each 15 s window delivers, its cursors replicated, so
# the other takes over where it left
cport=$(port_block 20)
env PROVEN_DATA="$work/cluster" PROVEN_CLUSTER_NODES=2 \
    PROVEN_CLUSTER_PORT="$cport" PROVEN_BUILD="$build" \
    PROVEN_PROVEND_ARGS="--eth-rpc http://127.0.0.1:$liar2 --eth-checkpoint $checkpoint --eth-poll-ms 200" \
    setsid "$top/nginx-conf/run-cluster.sh" >"$work/cluster.log" 2>&1 &
pids+=($!)
on() { local i=$1; shift; PROVEN_DATA="$work/cluster/node$i" "$@"; }
has_key() {
    on "$1" "$build/bin/proven" cluster status 2>/dev/null \
        | grep -Eq '"key": ?"[0-9a-f]{16}"' && echo yes
}
EVENTUALLY_S=180 eventually "a cluster of two: node 1 holds the key" yes has_key 1
EVENTUALLY_S=60 eventually "and node 2" yes has_key 2
deployed() {   # (storage answers once the node has caught up)
    on 1 "$build/bin/proven" app deploy "$work/app" --app ev >/dev/null 2>&1 \
        && echo yes
}
EVENTUALLY_S=60 eventually "the app deploys on node 1" yes deployed
cseen() {   # cseen I: what quick saw, read on node I
    on "$1" "$build/bin/proven" sql --app ev --db events --query \
        "SELECT data, times FROM seen WHERE filter = 'quick' ORDER BY id" \
        2>/dev/null \
        | node -e 'let s = ""; process.stdin.on("data", (d) => s += d);
                   process.stdin.on("end", () => console.log(s.trim().split("\n")
                       .filter(Boolean).map((l) => JSON.parse(l))
                       .map((r) => r.data + "x" + r.times).join(" ")));'
}
delivering() {   # delivering I: whether node I delivers now
    on "$1" node "$top/tests/call.mjs" \
        "unix:$work/cluster/node$1/provend.sock" eth.events 2>/dev/null \
        | grep -o '"delivering":[a-z]*' | cut -d: -f2
}
caught_up() {   # caught_up I: whether node I follows the head
    on "$1" node "$top/tests/call.mjs" \
        "unix:$work/cluster/node$1/provend.sock" eth.events 2>/dev/null \
        | grep -o '"caught_up":[a-z]*' | cut -d: -f2
}
nfilters() {   # nfilters I: the filters node I has a cursor for
    on "$1" node "$top/tests/call.mjs" \
        "unix:$work/cluster/node$1/provend.sock" eth.events 2>/dev/null \
        | grep -o '"handler"' | wc -l
}
EVENTUALLY_S=60 eventually "node 1 follows the chain" true caught_up 1
EVENTUALLY_S=60 eventually "node 2 too" true caught_up 2
eventually "each starts the app's three filters, delivering or not" 3 \
    nfilters 1
eventually "(node 2)" 3 nfilters 2
drive emit "$emitter" 0xc1 0xc2 0xc3
EVENTUALLY_S=60 eventually "each event once in the cluster, not once per node" \
    "0xc1x1 0xc2x1 0xc3x1" cseen 2
# into the next window, where the lease may pass
sleep $((16 - $(date +%s) % 15))
drive emit "$emitter" 0xc4 0xc5
EVENTUALLY_S=60 eventually "across a window's end too" \
    "0xc1x1 0xc2x1 0xc3x1 0xc4x1 0xc5x1" cseen 1
same "one node delivers at a time" "false true" sh -c \
    "$(declare -f on delivering); top=$top work=$work; { delivering 1; delivering 2; } | sort | paste -sd' '"

echo "# $passed passed, $failed failed"
[ "$failed" -eq 0 ]
