#!/bin/bash
# Three local nodes in the foreground, each its own nginx, provend and
# nats-server (nginx-conf/run-local.sh with a cluster file), on loopback.
# Node i (1..3) serves HTTP on $PROVEN_CLUSTER_PORT + 10*(i-1) and takes the
# rest of its ports from that block of ten: +1 HTTPS (its attestation,
# bound to its TLS key), +4 NATS clients, +5 NATS routes, +6 NATS
# monitoring.  Data in $PROVEN_DATA/node<i>.  Ctrl-C or SIGTERM stops all.
#
# The nodes share one dev PKI (node 1 makes it, the others copy it) so
# that their documents chain to one root; peers must match each other's
# PCRs 1 and 2 (nginx with our modules, provend).  PCR 3 measures each
# node's own nginx.conf, whose ports differ.
#   PROVEN_CLUSTER_PORT (9080)  PROVEN_DATA (./var)  PROVEN_BUILD (./build)
#   PROVEN_CLUSTER_NODES (3)  PROVEN_NODE_ARGS_<i>: more provend options for
#   node i alone (tests give one node another measurement this way)
# A node that stops leaves the others running; `run-cluster.sh --node I`
# (same environment) starts node I again into the cluster.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
base=${PROVEN_CLUSTER_PORT:-9080}
nodes=${PROVEN_CLUSTER_NODES:-3}
data=${PROVEN_DATA:-$top/var}
mkdir -p "$data"
data=$(cd "$data" && pwd)

port() { echo $((base + 10 * ($1 - 1) + $2)); }

cluster_file() {   # cluster_file I: node I's cluster file
    local i=$1 j first=1
    {
        printf '{"cluster": "proven", "node": "n%s",\n' "$i"
        printf ' "nats": {"client": %s, "route": %s, "monitor": %s},\n' \
            "$(port "$i" 4)" "$(port "$i" 5)" "$(port "$i" 6)"
        printf ' "root": "%s/node1/attestation/dev-root.pem",\n' "$data"
        printf ' "match_pcrs": [1, 2],\n "peers": ['
        for j in $(seq 1 "$nodes"); do
            [ "$j" = "$i" ] && continue
            [ $first = 1 ] || printf ','
            first=0
            printf '\n  {"name": "n%s", "attestation": "https://127.0.0.1:%s/attestation", "route": "127.0.0.1:%s"}' \
                "$j" "$(port "$j" 1)" "$(port "$j" 5)"
        done
        printf ']}\n'
    } > "$data/node$i/cluster.json"
}

pids=()
stop() {
    trap - INT TERM EXIT
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    exit "${1:-0}"
}
trap stop INT TERM EXIT

start_node() {   # start_node I
    local i=$1
    mkdir -p "$data/node$i"
    cluster_file "$i"
    PROVEN_DATA=$data/node$i PROVEN_HTTP_PORT=$(port "$i" 0) \
    PROVEN_HTTPS_PORT=$(port "$i" 1) PROVEN_PROVIDER=dev \
    PROVEN_PROVEND_ARGS="${PROVEN_PROVEND_ARGS:-} $(eval echo "\${PROVEN_NODE_ARGS_$i:-}") --cluster $data/node$i/cluster.json" \
        setsid "$top/nginx-conf/run-local.sh" > "$data/node$i/node.log" 2>&1 &
    pids+=($!)
}

# --node I: node I alone (one that was stopped, back into its cluster)
if [ "${1:-}" = --node ]; then
    [ -s "$data/node1/attestation/dev-root.pem" ] || {
        echo "run-cluster: no cluster in $data to rejoin" >&2; exit 2; }
    start_node "$2"
    code=0
    wait "${pids[0]}" || code=$?
    stop "$code"
fi

start_node 1
for _ in $(seq 1 250); do
    [ -s "$data/node1/attestation/dev-root.pem" ] && break
    sleep 0.04
done
for i in $(seq 2 "$nodes"); do
    if [ ! -e "$data/node$i/attestation" ]; then
        mkdir -p "$data/node$i"
        cp -r "$data/node1/attestation" "$data/node$i/attestation"
    fi
    start_node "$i"
done

# Ready once every node has admitted the others and applied the log: until
# then a request waits (20 s at most) for its node to catch up.
echo "Proven cluster (local): starting $nodes nodes..."
for i in $(seq 1 "$nodes"); do
    for _ in $(seq 1 600); do
        PROVEN_DATA=$data/node$i "$top/build/bin/proven" cluster status \
            2>/dev/null | grep -q '"ready": true' && break
        sleep 0.2
    done
done

cat <<MSG
Proven cluster (local) of $nodes nodes is ready:
$(for i in $(seq 1 "$nodes"); do echo "  node $i: http://127.0.0.1:$(port "$i" 0)/  data $data/node$i"; done)
Status:  PROVEN_DATA=$data/node1 $top/build/bin/proven cluster status
Ctrl-C stops the cluster.
MSG

# A node that fails leaves the others running, as a cluster should; the
# last one to go ends this script.
for p in "${pids[@]}"; do
    wait "$p" || echo "run-cluster: a node exited ($?)" >&2
done
stop 1
