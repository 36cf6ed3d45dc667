#!/bin/bash
# Cluster peers of enclaves, named by the host (initialize, add_peer), over
# the unix stand-in for vsock.  Each node is what an image runs: its
# proven-agent (the control channel), proven-egress's proxy with its
# forwards (the one way out), the inbound relays (the host's ports carried
# in), nginx and provend (--cluster-if the file the agent writes); and
# what its host runs: proven-egress's host side (the operator's list) and
# the relays' host ends.  Node i's peers are reached only at their hosts'
# ports: admissions through the egress proxy, NATS routes through the
# forwards, both checked on both sides.
#
# Two nodes named by initialize form a cluster: they admit each other,
# share the cluster key and the replicated storage.  A third, named to the
# first two by add_peer, joins and reads what was written before it came.
# The host cannot name a peer the image does not permit, set the rest of
# the cluster (root, PCRs), or bring in a node the others have not
# admitted.
# Usage: tests/peers.sh BUILD_DIR   (KEEP_WORK=1 keeps the logs and data)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-build}" && pwd)
proven=$build/bin/proven
work=$(mktemp -d)
passed=0 failed=0
pids=()
EVENTUALLY_S=60

. "$(dirname "$0")/lib.sh"

cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null
    done
    wait 2>/dev/null
    [ -n "${KEEP_WORK:-}" ] && echo "# kept $work" || rm -rf "$work"
}
trap cleanup EXIT

# Node i's ports: a block of 20 from base.  +0 HTTP, +1 HTTPS (nginx), +2
# its host's HTTPS (carried in), +4/5/6 NATS client, routes, monitoring, +7
# its host's route port (carried in), +8 the egress proxy, +10.. forwards.
base=$(port_block 80)
port() { echo $((base + 20 * ($1 - 1) + $2)); }
dir() { echo "$work/n$1"; }

# spawn NAME CMD...: in the background, a process group of its own
spawn() {
    local name=$1; shift
    setsid "$@" >>"$work/$name.log" 2>&1 &
    pids+=($!)
}

# The image's: what initialize may add (every node's host ports), the
# cluster template (the dev root here, shared by the nodes; peers must
# match PCRs 1 and 2).
: >"$work/image.allow"
for i in 1 2 3; do
    echo "127.0.0.1:$(port "$i" 2)"
    echo "127.0.0.1:$(port "$i" 7)"
done >"$work/permit"
# an operator's list: every node's host ports
cp "$work/permit" "$work/host.allow"

template() {   # template I
    printf '{"cluster": "proven", "nats": {"client": %s, "route": %s, "monitor": %s},\n' \
        "$(port "$1" 4)" "$(port "$1" 5)" "$(port "$1" 6)"
    printf ' "root": "%s/data/attestation/dev-root.pem", "match_pcrs": [1, 2],\n' "$(dir 1)"
    printf ' "proxy": "http://127.0.0.1:%s"}\n' "$(port "$1" 8)"
}

peer() {   # peer I: initialize's (and add_peer's) view of node I
    printf '{"name": "n%s", "attestation": "https://127.0.0.1:%s/attestation", "route": "127.0.0.1:%s"}' \
        "$1" "$(port "$1" 2)" "$(port "$1" 7)"
}

# enclave I: the agent, the egress proxy and the inbound relays
enclave() {
    local i=$1 d
    d=$(dir "$i")
    mkdir -p "$d/run" "$d/data"
    template "$i" >"$d/template.json"
    spawn "agent$i" "$build/bin/proven-agent" --control "unix:$d/control.sock" \
        --ready "$d/run/initialized" --extra "$d/run/egress.extra" \
        --permit "$work/permit" --init-socket "$d/no-init.sock" \
        --cluster-template "$d/template.json" --cluster "$d/run/cluster.json" \
        --forwards "$d/run/egress.forwards" --forward-port "$(port "$i" 10)" \
        --provend "$d/data/provend.sock"
    # the host's side
    spawn "egress-host$i" "$build/bin/proven-egress" host \
        --listen "unix:$d/egress.sock" --allow "$work/host.allow" --verbose
    spawn "in443-host$i" "$build/bin/proven-relay" \
        --listen "tcp:127.0.0.1:$(port "$i" 2)" --to "unix:$d/in443.sock" \
        --transport to
    route_relay "$i"
    # the enclave's side
    spawn "in443-$i" "$build/bin/proven-relay" --listen "unix:$d/in443.sock" \
        --transport listen --to "tcp:127.0.0.1:$(port "$i" 1)"
    spawn "inroute-$i" "$build/bin/proven-relay" \
        --listen "unix:$d/inroute.sock" --transport listen \
        --to "tcp:127.0.0.1:$(port "$i" 5)"
}

# the host's end of node I's route port (the host may stop carrying it)
declare -A route_pid
route_relay() {
    spawn "inroute-host$1" "$build/bin/proven-relay" \
        --listen "tcp:127.0.0.1:$(port "$1" 7)" \
        --to "unix:$(dir "$1")/inroute.sock" --transport to
    route_pid[$1]=$!
}

# stop_node I: its nginx and provend, and wait for them
stop_node() {
    kill -TERM -- "-${node_pid[$1]}"
    for _ in $(seq 1 100); do
        kill -0 "${node_pid[$1]}" 2>/dev/null || break
        sleep 0.1
    done
}

# started after initialize, as init starts them after the agent's READY
services() {
    local i=$1 d
    d=$(dir "$i")
    spawn "egress$i" "$build/bin/proven-egress" proxy \
        --listen "tcp:127.0.0.1:$(port "$i" 8)" --to "unix:$d/egress.sock" \
        --allow "$work/image.allow" --extra "$d/run/egress.extra" \
        --permit "$work/permit" --forwards "$d/run/egress.forwards" --verbose
    if [ "$i" != 1 ] && [ ! -e "$d/data/attestation" ]; then
        cp -r "$(dir 1)/data/attestation" "$d/data/attestation"
    fi
    node_up "$i"
}

# nginx and provend as an enclave without keyd runs them: no key in a file
declare -A node_pid
node_up() {
    local i=$1 d
    d=$(dir "$i")
    PROVEN_DATA=$d/data PROVEN_HTTP_PORT=$(port "$i" 0) \
    PROVEN_HTTPS_PORT=$(port "$i" 1) PROVEN_PROVIDER=dev PROVEN_BUILD=$build \
    PROVEN_PROVEND_ARGS="--cluster-if $d/run/cluster.json --master-key enclave --log-level debug" \
        spawn "node$i" "$top/nginx-conf/run-local.sh"
    node_pid[$i]=$!
}

# control I OP [JSON]: an op on node I's control channel, its answer as JSON
control() {
    node "$top/tests/call.mjs" "unix:$(dir "$1")/control.sock" "$2" \
        "${3:-{\}}"
}

# status I: "n1 n2:1 n3:0 key=... ready=true"
status() {
    PROVEN_DATA=$(dir "$1")/data "$proven" cluster status 2>/dev/null \
        | node -e '
        let s = ""; process.stdin.on("data", (d) => s += d);
        process.stdin.on("end", () => {
            let d;
            try { d = JSON.parse(s); } catch { return; }
            console.log([d.node, ...d.members.map((m) =>
                `${m.name}:${m.admitted ? 1 : 0}`),
                d.key ? "key=yes" : `key=none (${d.key_wait}; JetStream `
                    + `leader ${(d.jetstream || {}).leader || "none"})`,
                `ready=${d.storage.ready}`].join(" "));
        });'
}

# admitted I: node I and its members, without the key
admitted() { status "$1" | cut -d' ' -f1-3; }

# on a failure: what each node's provend and nats-server said of the key,
# JetStream and routes, last
on_fail() {
    local i f
    for i in 1 2 3; do
        for f in "$work/node$i.log" "$(dir "$i")/data/nats/nats.log"; do
            [ -f "$f" ] || continue
            echo "n$i ${f##*/}:"
            grep -E "cluster key|quorum|JetStream|leader|[Rr]oute|holder" "$f" \
                | grep -v "request 1" | tail -6 | cut -c1-200
        done
    done
}

on() { local i=$1; shift; PROVEN_DATA=$(dir "$i")/data "$proven" "$@"; }

# ---- the host names what the image permits, nothing else -------------------------

enclave 1
enclave 2
for _ in $(seq 1 100); do
    [ -S "$(dir 1)/control.sock" ] && [ -S "$(dir 2)/control.sock" ] && break
    sleep 0.05
done

check "a peer outside the image's permitted egress: initialize refused" 0 \
    -m '"code":"bad_request".*evil\.example:443 is not one the image permits' \
    control 1 initialize "{\"config\": {\"cluster\": {\"node\": \"n1\", \"peers\": [$(peer 2), {\"name\": \"n9\", \"attestation\": \"https://evil.example/attestation\", \"route\": \"127.0.0.1:$(port 2 7)\"}]}}}"
check "a cluster's root or PCRs are not the host's to set" 0 \
    -m '"code":"bad_request".*and nothing else' \
    control 1 initialize "{\"config\": {\"cluster\": {\"node\": \"n1\", \"root\": \"/tmp/mine.pem\", \"peers\": [$(peer 2)]}}}"
check "a peer named as this node: refused" 0 -m '"code":"bad_request".*n1 is taken' \
    control 1 initialize "{\"config\": {\"cluster\": {\"node\": \"n1\", \"peers\": [$(peer 2), {\"name\": \"n1\", \"attestation\": \"https://127.0.0.1:$(port 2 2)/attestation\", \"route\": \"127.0.0.1:$(port 2 7)\"}]}}}"
check "add_peer before initialize: conflict" 0 -m '"code":"conflict"' \
    control 1 add_peer "$(peer 2)"
check "and nothing of them was written" 1 sh -c \
    "ls '$(dir 1)/run' | grep -q ."

# ---- two nodes, named to each other by initialize ----------------------------------

check "node 1 initialized with its peer n2" 0 -m '"ok":true' \
    control 1 initialize "{\"config\": {\"cluster\": {\"node\": \"n1\", \"peers\": [$(peer 2)]}}}"
check "node 2 initialized with its peer n1" 0 -m '"ok":true' \
    control 2 initialize "{\"config\": {\"cluster\": {\"node\": \"n2\", \"peers\": [$(peer 1)]}}}"
check "the cluster file: the image's template, the host's node and peer, its route a forward" 0 \
    node -e '
        const c = JSON.parse(require("fs").readFileSync(process.argv[1]));
        const t = JSON.parse(require("fs").readFileSync(process.argv[2]));
        if (c.root !== t.root || c.proxy !== t.proxy || c.node !== "n1"
            || c.peers.length !== 1 || c.peers[0].route !== "127.0.0.1:" + process.argv[3])
            process.exit(1);' \
    "$(dir 1)/run/cluster.json" "$(dir 1)/template.json" "$(port 1 10)"
services 1
for _ in $(seq 1 250); do
    [ -s "$(dir 1)/data/attestation/dev-root.pem" ] && break
    sleep 0.04
done
services 2

# JetStream's first leader election may take minutes (nats-server
# 2.9 at a cold start, seen once in CI): waited for longer
EVENTUALLY_S=180 eventually \
    "node 1 admits n2 through its egress, and has the cluster key" \
    "n1 n2:1 key=yes ready=true" status 1
eventually "node 2 admits n1 the same way" "n2 n1:1 key=yes ready=true" status 2
check "node 1's NATS route goes to its forward, not to n2's port" 0 \
    -m "nats-route://127.0.0.1:$(port 1 10)" cat "$(dir 1)/data/nats/nats.conf"
check "the admission went through the egress proxy and the host's side" 0 \
    grep -q "127.0.0.1:$(port 2 2) (127.0.0.1)" "$work/egress-host1.log"
check "and the route through the forward, to n2's host's route port" 0 \
    grep -q "127.0.0.1:$(port 2 7) (127.0.0.1)" "$work/egress-host1.log"

check "a value written through node 1" 0 on 1 kv set --app peers greeting hello
applied=$(on 1 cluster status | node -e '
    let s = ""; process.stdin.on("data", (d) => s += d);
    process.stdin.on("end", () => console.log(JSON.parse(s).storage.applied));')
same "is read on node 2, over the routes the host carries" hello \
    on 2 kv get --app peers greeting --after "$applied"
check "no key on the disk the host stores: not the master key, not the cluster key" 0 \
    sh -c "ls '$(dir 1)/data/keys' '$(dir 2)/data/keys' \
           | grep -E 'master|cluster' >'$work/keys.txt'; test ! -s '$work/keys.txt'"

# ---- a third node, added by add_peer ------------------------------------------------

enclave 3
for _ in $(seq 1 100); do
    [ -S "$(dir 3)/control.sock" ] && break
    sleep 0.05
done
check "node 3 initialized with n1 and n2 as its peers" 0 -m '"ok":true' \
    control 3 initialize "{\"config\": {\"cluster\": {\"node\": \"n3\", \"peers\": [$(peer 1), $(peer 2)]}}}"
services 3
eventually "node 3 admits n1 and n2 (their attestations check out)" \
    "n3 n1:1 n2:1" admitted 3
sleep 3
check "but n1 and n2 do not know it: no route of theirs takes it, no key" 0 \
    -m 'key=none' status 3

check "add_peer n3 on node 1" 0 -m '"ok":true.*"provend":true' \
    control 1 add_peer "$(peer 3)"
check "add_peer n3 on node 2 (proven-host control)" 0 \
    -m 'added n3: the guest admits it on its attestation' \
    "$build/bin/proven-host" control "unix:$(dir 2)/control.sock" add_peer n3 \
    "https://127.0.0.1:$(port 3 2)/attestation" "127.0.0.1:$(port 3 7)"
check "add_peer of the same peer again (an answer lost): ok, provend told again" 0 \
    -m '"ok":true.*"provend":true' control 1 add_peer "$(peer 3)"
check "add_peer of a name taken by another peer: exists" 0 -m '"code":"exists"' \
    control 1 add_peer "{\"name\": \"n3\", \"attestation\": \"https://127.0.0.1:$(port 2 2)/attestation\", \"route\": \"127.0.0.1:$(port 2 7)\"}"
check "add_peer outside the image's permitted egress: refused" 1 \
    -m 'add_peer: invalid: add_peer: 127.0.0.1:1 is not one the image permits' \
    "$build/bin/proven-host" control "unix:$(dir 1)/control.sock" add_peer n9 \
    https://127.0.0.1:1/attestation 127.0.0.1:2
eventually "node 1 admits n3" "n1 n2:1 n3:1 key=yes ready=true" status 1
eventually "node 3 gets the cluster key and catches up" \
    "n3 n1:1 n2:1 key=yes ready=true" status 3
same "node 3 reads what was written before it came" hello \
    on 3 kv get --app peers greeting --after "$applied"
check "node 1's cluster file holds n3 (a restarted provend keeps it)" 0 \
    -m '"n3"' cat "$(dir 1)/run/cluster.json"

# ---- a node started again: its key from a peer again, its peers from the file ------

check "a value written through node 3" 0 \
    on 3 kv set --app peers later "written through n3"
stop_node 2
check "node 2 stopped" 1 kill -0 "${node_pid[2]}"
node_up 2
eventually "node 2, started again, admits n1 and n3 (add_peer's, from the file) and gets the key from a peer" \
    "n2 n1:1 n3:1 key=yes ready=true" status 2
applied=$(on 3 cluster status | node -e '
    let s = ""; process.stdin.on("data", (d) => s += d);
    process.stdin.on("end", () => console.log(JSON.parse(s).storage.applied));')
same "and reads what the cluster holds: its copy made again from the log" \
    "written through n3" \
    on 2 kv get --app peers later --after "$applied"

# ---- the host holds the routes back: the node named first makes no second key ------

# fp I: node I's cluster key fingerprint
fp() {
    on "$1" cluster status | node -e '
        let s = ""; process.stdin.on("data", (d) => s += d);
        process.stdin.on("end", () => console.log(JSON.parse(s).key));'
}
key_before=$(fp 2)
stop_node 1
for i in 1 2 3; do
    kill -TERM "${route_pid[$i]}"
done
node_up 1
eventually "node 1 started again admits n2 and n3 (their HTTPS still carried)" \
    "n1 n2:1 n3:1" admitted 1
sleep 14
check "with no route to a holder, node 1 (named first) asked in vain, yet made no key" 0 \
    -m 'key=none' status 1
for i in 1 2 3; do
    route_relay "$i"
done
eventually "the routes carried again: node 1 gets the cluster's key from a holder" \
    "n1 n2:1 n3:1 key=yes ready=true" status 1
same "the same key as before: one key in the cluster" "$key_before" fp 1

# ---- the host points a peer's name at the node itself, or at a peer twice ---------

check "add_peer x1 at node 1's own address" 0 -m '"ok":true' \
    control 1 add_peer "{\"name\": \"x1\", \"attestation\": \"https://127.0.0.1:$(port 1 2)/attestation\", \"route\": \"127.0.0.1:$(port 1 7)\"}"
check "add_peer x2 at n2's address" 0 -m '"ok":true' \
    control 1 add_peer "{\"name\": \"x2\", \"attestation\": \"https://127.0.0.1:$(port 2 2)/attestation\", \"route\": \"127.0.0.1:$(port 2 7)\"}"
eventually "x1 is refused: it is node 1 itself" 1 \
    sh -c "PROVEN_DATA='$(dir 1)/data' '$proven' cluster status | grep -c 'it is this node'"
eventually "x2 is refused: it is n2, admitted already" 1 \
    sh -c "PROVEN_DATA='$(dir 1)/data' '$proven' cluster status | grep -c 'the TLS key of n2, admitted already'"

# ---- provend's op itself --------------------------------------------------------------

check "cluster.add_peer: a route that is not HOST:PORT is refused" 0 \
    -m '"code":"invalid".*its route HOST:PORT' \
    node "$top/tests/call.mjs" "unix:$(dir 1)/data/provend.sock" \
    cluster.add_peer '{"name": "n7", "attestation": "https://127.0.0.1:1/a", "route": "no port"}'
mkdir -p "$work/alone"
cp -r "$(dir 1)/data/tls" "$work/alone/tls"
printf '{"cluster": "proven", "node": "a1", "nats": {"client": %s, "route": %s, "monitor": %s}, "root": "%s", "match_pcrs": [1], "peers": []}\n' \
    "$(port 4 4)" "$(port 4 5)" "$(port 4 6)" \
    "$(dir 1)/data/attestation/dev-root.pem" >"$work/alone.json"
spawn alone "$build/bin/provend" --data "$work/alone" --provider dev \
    --cluster "$work/alone.json"
for _ in $(seq 1 100); do
    [ -S "$work/alone/provend.sock" ] && break
    sleep 0.05
done
check "a node that started alone takes no peer (its JetStream runs alone)" 0 \
    -m '"code":"conflict".*started alone' \
    node "$top/tests/call.mjs" "unix:$work/alone/provend.sock" \
    cluster.add_peer "$(peer 1)"

# a clustered enclave without keyd has no master key that outlives a
# start: ACME, whose keys are kept sealed with one, is refused
check "--master-key enclave, clustered without keyd: ACME refused, said why" 1 \
    -m 'ACME needs a master key that outlives a start' \
    "$build/bin/provend" --data "$work/alone-acme" --provider dev \
    --socket "$work/alone-acme.sock" --master-key enclave \
    --cluster "$work/alone.json" --acme-directory https://127.0.0.1:1/dir \
    --acme-domain node.test --tls-live "$work/alone-acme-live"

# enclave keys without keyd and without a cluster: no storage at all
mkdir -p "$work/solo"
spawn solo "$build/bin/provend" --data "$work/solo" --provider dev \
    --master-key enclave
for _ in $(seq 1 100); do
    [ -S "$work/solo/provend.sock" ] && break
    sleep 0.05
done
check "--master-key enclave alone, without keyd: no storage, and no key file made" 0 \
    -m 'storage_unavailable' sh -c "'$proven' kv set --socket '$work/solo/provend.sock' \
        --app solo k v; test ! -e '$work/solo/keys/master.key'"

echo "# $passed passed, $failed failed"
[ "$failed" = 0 ]
