#!/bin/bash
# Governance of measurements on chain (daemon/chains/governance.c): a
# contract (tests/chains/contracts/Governance.sol, compiled with solc from
# npm, on ganache) lists the measurements (PCR0-2) a cluster's nodes may
# run, changed by 2 of its 3 owners.  A three-node local cluster
# (nginx-conf/run-cluster.sh) admits peers by that list, read with storage
# proofs, and so upgrades node by node from measurement A to B: a node on
# B is refused until B has its second approval, then admitted; once A is
# removed, the node still on A is dropped by the others within a re-check
# (2 s here), and admitted again on B.  Data written before is read after.
# Usage: tests/governance.sh BUILD_DIR   (KEEP_WORK=1 keeps the logs)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-build}" && pwd)
proven=$build/bin/proven
work=$(mktemp -d)
export PROVEN_BUILD=$build
passed=0 failed=0
pids=()
cluster_pid=
EVENTUALLY_S=90

. "$(dirname "$0")/lib.sh"

cleanup() {
    local p
    for p in $cluster_pid "${pids[@]}"; do
        kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null
    done
    wait 2>/dev/null
    [ -n "${KEEP_WORK:-}" ] && echo "# kept $work" || rm -rf "$work"
}
trap cleanup EXIT

# the cluster's blocks of ten, then ganache's port
base=$(port_block 31)
port=$base chain=$((base + 30))
d=$work/c

on_fail() {
    local i
    for i in 1 2 3; do
        echo "n$i: $(status "$d/node$i")"
        grep -E "governance|admitted|dropped" "$d/node$i/node.log" 2>/dev/null \
            | tail -3 | cut -c1-240
    done
}

# status NODE_DIR: "n1 n2:1 n3:0"
status() {
    PROVEN_DATA=$1 "$proven" cluster status 2>/dev/null | node -e '
        let s = ""; process.stdin.on("data", (d) => s += d);
        process.stdin.on("end", () => {
            let d;
            try { d = JSON.parse(s); } catch { return; }
            console.log([d.node, ...d.members.map((m) =>
                `${m.name}:${m.admitted ? 1 : 0}`)].join(" "));
        });'
}
on() { local i=$1; shift; PROVEN_DATA="$d/node$i" "$proven" "$@"; }
gov() { node "$top/tests/chains/governance.mjs" "$chain" "$@"; }

# ---- the chain and the contract --------------------------------------------------

node "$top/tests/chains/ganache.mjs" "$chain" "$work/chain.json" \
    >"$work/ganache.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do
    [ -s "$work/chain.json" ] && break
    sleep 0.05
done
owners=($(node "$top/tests/chains/tokens.mjs" "$chain" accounts | sed -n 2,4p))
for m in A B C; do head -c 144 /dev/urandom >"$work/pcrs.$m"; done
hash_a=$(gov hash "$work/pcrs.A") hash_b=$(gov hash "$work/pcrs.B")
gov deploy "$work/gov.json" 2 "${owners[@]}" >"$work/address" \
    || { echo "# the contract did not deploy"; exit 1; }
contract=$(cat "$work/address")
id=$(gov allow "$work/gov.json" "${owners[0]}" "$work/pcrs.A" 1)
gov approve "$work/gov.json" "${owners[1]}" "$id"
checkpoint=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).checkpoint)' "$work/chain.json")

# ---- three nodes on A ------------------------------------------------------------

export PROVEN_DATA=$d PROVEN_CLUSTER_PORT=$port
export PROVEN_PROVEND_ARGS="--eth-rpc http://127.0.0.1:$chain \
    --eth-checkpoint $checkpoint --eth-poll-ms 200 --governance $contract \
    --governance-confirmations 0 --governance-every 2"
export PROVEN_NODE_ARGS_1="--pcrs-file $work/pcrs.A"
export PROVEN_NODE_ARGS_2="--pcrs-file $work/pcrs.A"
export PROVEN_NODE_ARGS_3="--pcrs-file $work/pcrs.A"
setsid "$top/nginx-conf/run-cluster.sh" >"$work/cluster.log" 2>&1 &
cluster_pid=$!

eventually "node 1 admits nodes 2 and 3, on A" "n1 n2:1 n3:1" status "$d/node1"
eventually "node 2 admits both" "n2 n1:1 n3:1" status "$d/node2"
eventually "node 3 admits both" "n3 n1:1 n2:1" status "$d/node3"
check "gov.status: the contract's one measurement, A, proved" 0 \
    -m "\"allowed\":\[\"$hash_a\"\]" node "$top/tests/call.mjs" \
    "unix:$d/node1/provend.sock" gov.status
check "cluster.status names each peer's measurement" 0 \
    -m "\"measurement\": \"$hash_a\"" on 1 cluster status
eventually "a write through node 1" 0 sh -c \
    "PROVEN_DATA='$d/node1' '$proven' kv set --app gov before v1 >/dev/null 2>&1; echo \$?"

# restart NODE PCRS: node NODE stopped and started again measuring PCRS
restart() {
    local pgid
    pgid=$(ps -o pgid= -p "$(pgrep -f "provend --data $d/node$1 " | head -1)" \
           | tr -d ' ')
    [ -n "$pgid" ] && kill -TERM -- "-$pgid"
    for _ in $(seq 1 100); do
        pgrep -f "provend --data $d/node$1 " >/dev/null || break
        sleep 0.1
    done
    env "PROVEN_NODE_ARGS_$1=--pcrs-file $2" \
        setsid "$top/nginx-conf/run-cluster.sh" --node "$1" \
        >>"$work/rejoin$1.log" 2>&1 &
    pids+=($!)
}

# ---- B proposed but approved once: not yet ---------------------------------------

id=$(gov allow "$work/gov.json" "${owners[0]}" "$work/pcrs.B" 2)
restart 3 "$work/pcrs.B"
eventually "node 3 on B, approved by one owner of two: refused by node 1" \
    "n1 n2:1 n3:0" status "$d/node1"
eventually "and node 1 says why: B is not allowed" \
    "its measurement $hash_b is not one the governance contract $contract allows at block" \
    sh -c "reason=\$(PROVEN_DATA='$d/node1' '$proven' cluster status 2>/dev/null \
           | grep -o 'its measurement [^\"]* allows at block'); echo \"\$reason\""


# ---- the second approval: B joins, A still runs ----------------------------------

gov approve "$work/gov.json" "${owners[1]}" "$id"
eventually "B approved: node 1 admits node 3" "n1 n2:1 n3:1" status "$d/node1"
eventually "node 2 admits node 3" "n2 n1:1 n3:1" status "$d/node2"
eventually "node 3, on B, admits the nodes on A" "n3 n1:1 n2:1" \
    status "$d/node3"
eventually "node 3 reads what was written before it was upgraded" v1 \
    sh -c "PROVEN_DATA='$d/node3' '$proven' kv get --app gov before 2>/dev/null"

same "a client expecting the contract's measurements: A and B, a session" \
    "measurements: v1 v2
session: anonymous" node "$top/tests/chains/governance-client.mjs" \
    "http://127.0.0.1:$chain" "$contract" "http://127.0.0.1:$((port + 20))" \
    "$d/node1/attestation/dev-root.pem"

restart 2 "$work/pcrs.B"
eventually "node 2 upgraded to B: admitted by node 1 again" "n1 n2:1 n3:1" \
    status "$d/node1"
eventually "node 2 admits both" "n2 n1:1 n3:1" status "$d/node2"

# ---- A removed: node 1, still on A, dropped by the others ------------------------

id=$(gov remove "$work/gov.json" "${owners[2]}" "$work/pcrs.A")
gov approve "$work/gov.json" "${owners[0]}" "$id"
removed_at=$(date +%s)
EVENTUALLY_S=20 eventually "A removed: node 2 drops node 1" "n2 n1:0 n3:1" \
    status "$d/node2"
EVENTUALLY_S=20 eventually "node 3 drops node 1" "n3 n1:0 n2:1" \
    status "$d/node3"
# when each said so, by its own log's clock
for i in 2 3; do
    at=$(grep 'cluster: n1 dropped' "$d/node$i/node.log" | tail -1 | cut -c1-19)
    took=$(( $(date -d "$at" +%s) - removed_at ))
    [ "$took" -le 5 ] \
        && pass "node $i dropped it within a re-check of 2 s ($took s)" \
        || fail "node $i dropped it within a re-check of 2 s" "$took s"
done
# routes: what nats-server itself holds, not provend's flags
routes() {
    PROVEN_DATA=$1 "$proven" cluster status 2>/dev/null | node -e '
        let s = ""; process.stdin.on("data", (d) => s += d);
        process.stdin.on("end", () => {
            try { console.log(JSON.parse(s).routes.length); } catch { }
        });'
}
EVENTUALLY_S=20 eventually "node 2's nats-server holds no route to node 1" 1 \
    routes "$d/node2"
EVENTUALLY_S=20 eventually "nor node 3's" 1 routes "$d/node3"
check "node 2 says why" 0 -m "its measurement $hash_a is not one the governance" \
    on 2 cluster status

restart 1 "$work/pcrs.B"
eventually "node 1 on B: admitted by node 2 again" "n2 n1:1 n3:1" \
    status "$d/node2"
eventually "node 1 admits both" "n1 n2:1 n3:1" status "$d/node1"
eventually "node 1 reads what was written on A" v1 \
    sh -c "PROVEN_DATA='$d/node1' '$proven' kv get --app gov before 2>/dev/null"
check "gov.status: B alone now" 0 -m "\"allowed\":\[\"$hash_b\"\]" \
    node "$top/tests/call.mjs" "unix:$d/node1/provend.sock" gov.status

same "the client now expects B alone; A, removed, is refused" \
    "measurements: v2
session: anonymous
removed measurement: refused: attestation: PCR 0 is not the expected measurement" \
    node "$top/tests/chains/governance-client.mjs" \
    "http://127.0.0.1:$chain" "$contract" "http://127.0.0.1:$port" \
    "$d/node1/attestation/dev-root.pem" "$work/pcrs.A"

# ---- the contract's own rules --------------------------------------------------------

gov deploy "$work/gov2.json" 2 "${owners[@]}" >/dev/null
stale=$(gov allow "$work/gov2.json" "${owners[0]}" "$work/pcrs.C" 1)
id=$(gov remove-owner "$work/gov2.json" "${owners[1]}" "${owners[0]}")
gov approve "$work/gov2.json" "${owners[2]}" "$id"
check "a proposal made before the owners changed lapses (its proposer removed)" \
    1 -m "transaction failed" \
    gov approve "$work/gov2.json" "${owners[1]}" "$stale"
same "so nothing was allowed by it" "" gov measurements "$work/gov2.json"
id=$(gov allow "$work/gov2.json" "${owners[1]}" "$work/pcrs.C" 1)
gov approve "$work/gov2.json" "${owners[2]}" "$id"
id=$(gov remove "$work/gov2.json" "${owners[1]}" "$work/pcrs.C")
check "the last measurement cannot be removed (no cluster left)" 1 \
    -m "transaction failed" gov approve "$work/gov2.json" "${owners[2]}" "$id"

# ---- bad options ------------------------------------------------------------------

check "--governance without a cluster is refused" 2 -m "governance" \
    "$build/bin/provend" --data "$work/bad" --provider dev \
    --eth-rpc "http://127.0.0.1:$chain" --eth-checkpoint "$checkpoint" \
    --governance "$contract"

# (a cluster file of ports of our block no node uses)
printf '{"cluster": "x", "node": "n1", "nats": {"client": %s, "route": %s, "monitor": %s}, "root": "%s", "peers": []}\n' \
    $((base + 27)) $((base + 28)) $((base + 29)) \
    "$d/node1/attestation/dev-root.pem" >"$work/bad.json"
check "a bad --governance address stops provend at once, saying so" 1 \
    -m "a contract's address" timeout 20 "$build/bin/provend" \
    --data "$work/bad2" --provider dev --eth-rpc "http://127.0.0.1:$chain" \
    --eth-checkpoint "$checkpoint" --governance 0x12 \
    --cluster "$work/bad.json"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
