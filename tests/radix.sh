#!/bin/bash
# Apps' runOnRadixEvent handlers (daemon/chains/radix_events.c), read
# from a Gateway stand-in on loopback (tests/radix/gateway.mjs, its
# requests and answers through the models of Radix's own Gateway SDK).
# Events come once each, in ledger order; none from before the app was
# there, of another emitter, of another name, of a failed transaction; a
# restart neither repeats nor skips; pages of the stream followed; a
# handler that fails holds its filter and is tried again; a Gateway that
# answers for another network, out of order, or not at all: nothing
# delivered until it answers right; one node of a cluster delivers.
# Usage: tests/radix.sh BUILD_DIR   (KEEP_WORK=1 keeps the logs)
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

base=$(port_block 2)
gwport=$base
data=$work/data
export PROVEN_DATA=$data

spawn() {   # spawn NAME CMD...
    local name=$1; shift
    "$@" >>"$work/$name.log" 2>&1 &
    pids+=($!)
}

spawn gateway node "$top/tests/radix/gateway.mjs" "$gwport" "$work/gw.json"
for _ in $(seq 1 200); do
    [ -s "$work/gw.json" ] && break
    sleep 0.05
done
gateway=http://127.0.0.1:$gwport
gw() {   # gw PATH JSON: the stand-in's test calls
    curl -sf -XPOST "$gateway/test/$1" -d "$2" >/dev/null
}
COMPONENT=component_rdx1cptxxxxxxxxxfaucetxxxxxxxxx000527798379xxxxxxxxxfaucet
TYPO=component_rdx1cptxxxxxxxxxfaucetxxxxxxxxx000527798379xxxxxxxxxhkrefh
GENESIS=component_rdx1cptxxxxxxxxxgenssxxxxxxxxxx000977302539xxxxxxxxxgenssx
# commit [STATUS] EMITTER:NAME:VALUE[:MODULE[:DEPTH]] ...: one
# transaction of those events
commit() {
    local status=CommittedSuccess events="" e
    case "$1" in Committed*) status=$1; shift ;; esac
    for e in "$@"; do
        IFS=: read -r em name value module depth <<<"$e"
        events="$events${events:+,}{\"emitter\":\"$em\",\"name\":\"$name\",\"value\":$value,\"module\":\"${module:-Main}\",\"depth\":${depth:-1}}"
    done
    gw commit "{\"status\":\"$status\",\"events\":[$events]}"
}
mode() { gw mode "{\"mode\":\"$1\"}"; }
call() { node "$top/tests/call.mjs" "unix:$data/provend.sock" "$@"; }

on_fail() {
    call radix.events 2>&1 | cut -c1-600
    tail -5 "$work/provend.log" 2>/dev/null | cut -c1-300
}

start_provend() {
    spawn provend "$build/bin/provend" --data "$data" --provider dev \
        --radix-gateway "$gateway/" --radix-poll-ms 200 "$@"
    provend_pid=$!
    for _ in $(seq 1 200); do
        [ -S "$data/provend.sock" ] && call radix.events >/dev/null 2>&1 \
            && return
        sleep 0.05
    done
}
stop_provend() {
    kill -TERM "$provend_pid"
    wait "$provend_pid" 2>/dev/null
}

# seen FILTER: the values its handler was given, in order, and how many
# times each ("1x1 2x1 ...")
seen() {
    "$build/bin/proven" sql --app rx --db events --query \
        "SELECT value, times FROM seen WHERE filter = ?1 ORDER BY id" "$1" \
        2>/dev/null \
        | node -e 'let s = ""; process.stdin.on("data", (d) => s += d);
                   process.stdin.on("end", () => console.log(s.trim().split("\n")
                       .filter(Boolean).map((l) => JSON.parse(l))
                       .map((r) => r.value + "x" + r.times).join(" ")));'
}
status_of() {   # status_of HANDLER: its filter's error, or ok
    call radix.events | node -e 'let s = ""; process.stdin.on("data", (d) => s += d);
        process.stdin.on("end", () => { const r = JSON.parse(s).result;
            const f = r.filters.find((f) => f.handler === "index.js#" + process.argv[1]);
            console.log(f ? (f.error || "ok") : "none"); });' "$1"
}
gateway_error() {
    call radix.events | node -e 'let s = ""; process.stdin.on("data", (d) => s += d);
        process.stdin.on("end", () => console.log(JSON.parse(s).result.error || "ok"));'
}

# ---- bad options ---------------------------------------------------------------

check "a Gateway that is no http(s) URL is refused at start" 1 \
    -m 'radix-gateway must be an http\(s\):// URL' \
    "$build/bin/provend" --data "$work/bad" --provider dev \
    --radix-gateway ftp://127.0.0.1/
check "a plain Gateway where TLS is required: refused, saying why" 2 \
    -m 'an https:// Gateway is required.*host' \
    "$build/bin/provend" --data "$work/bad" --provider dev \
    --radix-gateway "$gateway" --radix-tls required
check "a network past 255 is refused" 2 -m 'radix-network' \
    "$build/bin/provend" --data "$work/bad" --provider dev \
    --radix-gateway "$gateway" --radix-network 256

# ---- the app ------------------------------------------------------------------

mkdir -p "$work/app"
cat >"$work/app/index.js" <<JS
import { runOnRadixEvent } from '@proven-network/handler';
import { getApplicationDb } from '@proven-network/sql';
import { getApplicationStore } from '@proven-network/kv';

const db = getApplicationDb('events').migrate(
    'CREATE TABLE seen (id INTEGER PRIMARY KEY, filter TEXT NOT NULL, '
    + 'version INTEGER NOT NULL, idx INTEGER NOT NULL, value TEXT NOT NULL, '
    + 'times INTEGER NOT NULL, UNIQUE (filter, version, idx))');
const flags = getApplicationStore('flags');

/* the U64 at the bottom of the event's tuples */
function valueOf(data) {
    let d = data;
    while (d.fields[0].kind === 'Tuple') {
        d = d.fields[0];
    }
    return d.fields[0].value;
}

/* idempotent by (state version, event index): a second delivery counted */
async function record(filter, e) {
    await db.execute('INSERT INTO seen (filter, version, idx, value, times) '
        + 'VALUES (?, ?, ?, ?, 1) ON CONFLICT (filter, version, idx) '
        + 'DO UPDATE SET times = times + 1',
        [filter, e.stateVersion, e.eventIndex, valueOf(e.data)]);
}

export const minted = runOnRadixEvent({ emitter: '$COMPONENT',
    eventName: 'MintedEvent' }, async (e) => {
    if (e.data.fields[0].value === '13'
        && (await flags.get('let-13')) !== 'yes') {
        throw new Error('not yet');
    }
    await record('minted', e);
});
export const burned = runOnRadixEvent({ emitter: '$COMPONENT',
    eventName: 'BurnedEvent' }, (e) => record('burned', e));
export const deep = runOnRadixEvent({ emitter: '$COMPONENT',
    eventName: 'DeepEvent' }, (e) => record('deep', e));
/* the faucet's address with its checksum's last letters changed */
export const typo = runOnRadixEvent({ emitter: '$TYPO',
    eventName: 'MintedEvent' }, (e) => record('typo', e));
JS

commit "$COMPONENT:MintedEvent:0"       # before provend: not the app's
start_provend
check "the app deploys" 0 "$build/bin/proven" app deploy "$work/app" --app rx
filters() {
    call radix.events | grep -o '"handler"' | wc -l
}
eventually "its four filters are followed" 4 filters
eventually "an emitter whose checksum fails: held, said" \
    "emitter $TYPO is not an address of network 1" status_of typo

# ---- once each, in order --------------------------------------------------------

commit "$COMPONENT:MintedEvent:1"
eventually "an event comes" "1x1" seen minted
commit "$COMPONENT:MintedEvent:2" "$GENESIS:MintedEvent:99" \
    "$COMPONENT:BurnedEvent:3" "$COMPONENT:MintedEvent:97:Metadata" \
    "$COMPONENT:MintedEvent:4"
commit CommittedFailure "$COMPONENT:MintedEvent:98"
commit "$COMPONENT:MintedEvent:5"
eventually "events come once each, in ledger and event order" \
    "1x1 2x1 4x1 5x1" seen minted
same "another name is another filter's" "3x1" seen burned
same "(the held one saw nothing)" "" seen typo
same "none from before the app, another emitter, its metadata module or a failed transaction" \
    "1x1 2x1 4x1 5x1" seen minted

# data deeper than any SBOR value (100 tuples: 200 JSON levels): held
# there, said, never handed over as null
commit "$COMPONENT:DeepEvent:1:Main:100" "$COMPONENT:MintedEvent:96:Main:3"
eventually "an event's data too deep: held, said" \
    "event 0 of transaction $(curl -sf -XPOST "$gateway/status/gateway-status" -d '{}' | grep -o '"state_version":[0-9]*' | cut -d: -f2): its data is deeper than 160 levels, or no memory" \
    sh -c "$(declare -f call status_of); top=$top data=$data; status_of deep | sed 's/^the handler: //'"
same "(the handler saw nothing of it)" "" seen deep
eventually "(nested data within SBOR's depth comes whole)" \
    "1x1 2x1 4x1 5x1 96x1" seen minted

# ---- a restart, and pages --------------------------------------------------------

stop_provend
commit "$COMPONENT:MintedEvent:6"
gw filler '{"n": 120}'
commit "$COMPONENT:MintedEvent:7"
start_provend
commit "$COMPONENT:MintedEvent:8"
eventually "a restart neither repeats nor skips" \
    "1x1 2x1 4x1 5x1 96x1 6x1 7x1 8x1" seen minted
# (120 transactions of another emitter's: the stand-in filters them out
# as the Gateway does; 60 of the app's own, in pages of 50)
for i in $(seq 100 159); do
    commit "$COMPONENT:BurnedEvent:$i"
done
want=$(seq 100 159 | sed 's/$/x1/' | paste -sd' ')
eventually "a stream longer than a page: each event once" "3x1 $want" \
    seen burned

# ---- a handler that fails ---------------------------------------------------------

commit "$COMPONENT:MintedEvent:12" "$COMPONENT:MintedEvent:13" \
    "$COMPONENT:MintedEvent:14"
eventually "a failing handler holds its filter: the rest of its transaction waits" \
    "1x1 2x1 4x1 5x1 96x1 6x1 7x1 8x1 12x1" seen minted
eventually "and says why" "the handler: handler_error: Error: not yet" \
    status_of minted
"$build/bin/proven" kv set --app rx --store flags let-13 yes >/dev/null
eventually "tried again, it goes on from where it was held, none twice" \
    "1x1 2x1 4x1 5x1 96x1 6x1 7x1 8x1 12x1 13x1 14x1" seen minted

# ---- a Gateway that misbehaves ------------------------------------------------------

mode network
commit "$COMPONENT:MintedEvent:20"
eventually "a Gateway of another network: said" \
    'the Gateway'"'"'s /status/gateway-status: it answers for network "stokenet", this node is on mainnet (--radix-network 1)' \
    gateway_error
same "(nothing delivered from it)" "1x1 2x1 4x1 5x1 96x1 6x1 7x1 8x1 12x1 13x1 14x1" \
    seen minted
mode disorder
commit "$COMPONENT:MintedEvent:21"
eventually "a page out of ledger order: held, said" \
    "the Gateway's transactions are not in ledger order" \
    sh -c "$(declare -f call status_of); top=$top data=$data; status_of minted | cut -c1-50"
same "(nothing delivered from it)" "1x1 2x1 4x1 5x1 96x1 6x1 7x1 8x1 12x1 13x1 14x1" \
    seen minted
mode down
eventually "a Gateway down: said" \
    "the Gateway's /status/gateway-status: HTTP status not 200: the stand-in is down" \
    gateway_error
mode none
eventually "the Gateway right again: each comes once" \
    "1x1 2x1 4x1 5x1 96x1 6x1 7x1 8x1 12x1 13x1 14x1 20x1 21x1" seen minted
same "none of the filters is held" "ok" status_of minted
check "(the requests went through the schema's fields)" 0 \
    -m '"/stream/transactions":[1-9]' curl -sf "$gateway/test/requests"

stop_provend

# ---- a cluster: one node at a time delivers ------------------------------------------

cport=$(port_block 20)
env PROVEN_DATA="$work/cluster" PROVEN_CLUSTER_NODES=2 \
    PROVEN_CLUSTER_PORT="$cport" PROVEN_BUILD="$build" \
    PROVEN_PROVEND_ARGS="--radix-gateway $gateway --radix-poll-ms 200" \
    setsid "$top/nginx-conf/run-cluster.sh" >"$work/cluster.log" 2>&1 &
pids+=($!)
on() { local i=$1; shift; PROVEN_DATA="$work/cluster/node$i" "$@"; }
has_key() {
    on "$1" "$build/bin/proven" cluster status 2>/dev/null \
        | grep -Eq '"key": ?"[0-9a-f]{16}"' && echo yes
}
EVENTUALLY_S=180 eventually "a cluster of two: node 1 holds the key" yes has_key 1
EVENTUALLY_S=60 eventually "and node 2" yes has_key 2
deployed() {
    on 1 "$build/bin/proven" app deploy "$work/app" --app rx >/dev/null 2>&1 \
        && echo yes
}
EVENTUALLY_S=60 eventually "the app deploys on node 1" yes deployed
cseen() {   # cseen I: what minted saw, read on node I
    on "$1" "$build/bin/proven" sql --app rx --db events --query \
        "SELECT value, times FROM seen WHERE filter = 'minted' ORDER BY id" \
        2>/dev/null \
        | node -e 'let s = ""; process.stdin.on("data", (d) => s += d);
                   process.stdin.on("end", () => console.log(s.trim().split("\n")
                       .filter(Boolean).map((l) => JSON.parse(l))
                       .map((r) => r.value + "x" + r.times).join(" ")));'
}
nfilters() {   # nfilters I: the filters node I has a cursor for
    on "$1" node "$top/tests/call.mjs" \
        "unix:$work/cluster/node$1/provend.sock" radix.events 2>/dev/null \
        | grep -o '"handler"' | wc -l
}
delivering() {   # delivering I: whether node I delivers now
    on "$1" node "$top/tests/call.mjs" \
        "unix:$work/cluster/node$1/provend.sock" radix.events 2>/dev/null \
        | grep -o '"delivering":[a-z]*' | cut -d: -f2
}
EVENTUALLY_S=60 eventually "each node starts the app's four filters" 4 \
    nfilters 1
EVENTUALLY_S=60 eventually "(node 2)" 4 nfilters 2
sleep 1
commit "$COMPONENT:MintedEvent:31" "$COMPONENT:MintedEvent:32"
EVENTUALLY_S=60 eventually "each event once in the cluster, not once per node" \
    "31x1 32x1" cseen 2
# into the next window, where the lease may pass
sleep $((16 - $(date +%s) % 15))
commit "$COMPONENT:MintedEvent:33"
EVENTUALLY_S=60 eventually "across a window's end too" "31x1 32x1 33x1" \
    cseen 1
same "one node delivers at a time" "false true" sh -c \
    "$(declare -f on delivering); top=$top work=$work; { delivering 1; delivering 2; } | sort | paste -sd' '"

echo "# $passed passed, $failed failed"
[ "$failed" -eq 0 ]
