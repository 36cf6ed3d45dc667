#!/bin/bash
# A local cluster as `make cluster` starts it (nginx-conf/run-cluster.sh):
# three nodes admit each other by their attestation and form one NATS
# JetStream cluster over mutual-TLS routes; data written through one node
# is read on the others (KV, SQL, an app deployed once); killing the node
# that leads the log during a stream of writes loses no acknowledged
# write, the two others keep serving, and the node started again catches
# up; a node cut off (its nats-server stopped) comes back with the same
# data as the others; a nats-server killed is restarted by its provend and
# rejoins; a node that measures other code is refused by the others, and
# says why.
# Usage: tests/cluster.sh BUILD_DIR   (KEEP_WORK=1 keeps the logs and data)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-build}" && pwd)
proven=$build/bin/proven
work=$(mktemp -d)
export PROVEN_BUILD=$build
passed=0 failed=0
cluster_pid=

. "$(dirname "$0")/lib.sh"

stop_cluster() {
    if [ -n "$cluster_pid" ]; then
        kill -TERM "$cluster_pid" 2>/dev/null
        wait "$cluster_pid" 2>/dev/null
        cluster_pid=
    fi
}

cleanup() {
    stop_cluster
    [ -n "${KEEP_WORK:-}" ] && echo "# kept $work" || rm -rf "$work"
}
trap cleanup EXIT

# on a failure: what each node of the cluster under test ($d) said of the
# key, JetStream and routes, last
on_fail() {
    local i f
    for i in 1 2 3; do
        for f in "${d:-}/node$i/node.log" "${d:-}/node$i/nats/nats.log"; do
            [ -f "$f" ] || continue
            echo "n$i ${f##*/}:"
            grep -E "cluster key|quorum|JetStream|leader|[Rr]oute|holder|follow|storage" \
                "$f" | tail -6 | cut -c1-200
        done
    done
}

start_cluster() {   # start_cluster NAME [VAR=VALUE...]: data in $work/NAME
    local name=$1; shift
    env PROVEN_DATA="$work/$name" "$@" \
        setsid "$top/nginx-conf/run-cluster.sh" >"$work/$name.log" 2>&1 &
    cluster_pid=$!
}

# status NODE_DIR: one line, "n1 n2:1 n3:0 routes=2 leader=n2 size=3"
status() {
    PROVEN_DATA=$1 "$proven" cluster status 2>/dev/null | node -e '
        let s = ""; process.stdin.on("data", (d) => s += d);
        process.stdin.on("end", () => {
            let d;
            try { d = JSON.parse(s); } catch { return; }   /* not up yet */
            const js = d.jetstream || {};
            console.log([d.node, ...d.members.map((m) =>
                `${m.name}:${m.admitted ? 1 : 0}`),
                `routes=${d.routes.length}`, `leader=${js.leader || ""}`,
                `size=${js.cluster_size || 0}`, `pid=${d.nats.pid}`,
                d.key ? `key=${d.key}` : `key=none (${d.key_wait})`
                ].join(" "));
        });'
}

# on I ARGS...: the proven CLI against node I of the running cluster
on() { local i=$1; shift; PROVEN_DATA="$d/node$i" "$proven" "$@"; }

# url I PATH: node I's HTTP address for PATH
url() { echo "http://127.0.0.1:$((port + 10 * ($1 - 1)))$2"; }

# log_leader I: the node leading the log stream, as node I sees it
log_leader() {
    on "$1" cluster status 2>/dev/null | node -e '
        let s = ""; process.stdin.on("data", (d) => s += d);
        process.stdin.on("end", () => {
            try {
                const l = JSON.parse(s).jetstream.streams
                    .find((x) => x.name === "PROVEN_LOG");
                console.log(l.leader.slice(1));
            } catch { }
        });'
}

# writes I FIRST LAST FILE: kv sets through node I, acknowledged keys
# appended to FILE
writes() {
    local n
    for n in $(seq "$2" "$3"); do
        on "$1" kv set --app load "k$n" "v$n" >/dev/null 2>&1 \
            && echo "k$n" >>"$4"
    done
}

# missing I FILE: how many keys of FILE node I does not hold
missing() {
    on "$1" kv keys --app load 2>/dev/null | sort >"$work/held.$1"
    sort "$2" | comm -23 - "$work/held.$1" | wc -l
}

# await NAME NODE_DIR REGEX: until the node's status line matches (45 s)
await() {
    local name=$1 dir=$2 re=$3 line=
    for _ in $(seq 1 450); do
        line=$(status "$dir")
        if [[ $line =~ $re ]]; then
            pass "$name"
            return 0
        fi
        sleep 0.1
    done
    echo "# last status of $dir: $line"
    fail "$name" "no status matching /$re/"
    return 1
}

# ---- three nodes --------------------------------------------------------------

# blocks of ten below Linux's ephemeral ports (32768 up), which a
# connection of the nodes themselves may hold
port=$((21000 + $$ % 100 * 100))
start_cluster ok PROVEN_CLUSTER_PORT=$port
d=$work/ok
for i in 1 2 3; do
    others=$(for j in 1 2 3; do [ $j = $i ] || printf ' n%s:1' $j; done)
    await "node $i admits the two others and holds two routes" "$d/node$i" \
        "^n$i$others routes=2 leader=n[123] "
done

# the cluster key: node 1 made it, the others got it from an attested
# holder over NATS; the same key everywhere (its fingerprint)
for i in 1 2 3; do
    await "node $i holds the cluster key" "$d/node$i" "key=[0-9a-f]{16}$"
done
keys=$(for i in 1 2 3; do status "$d/node$i" | grep -o 'key=[0-9a-f]*'; done \
       | sort -u | wc -l)
[ "$keys" = 1 ] && pass "the same cluster key on all three" \
    || fail "the same cluster key on all three" "$keys different keys"
check "node 1 made it; the others keep what they were given" 0 \
    -m '^32 32 32$' sh -c "stat -c %s $d/node1/keys/cluster.key \
        $d/node2/keys/cluster.key $d/node3/keys/cluster.key | xargs"

# every node sees the same JetStream meta leader
leaders=$(for i in 1 2 3; do status "$d/node$i" | grep -o 'leader=n[0-9]'; done \
          | sort -u | wc -l)
[ "$leaders" = 1 ] && pass "one JetStream meta leader for all three" \
    || fail "one JetStream meta leader for all three" "$leaders leaders"
# The group's size as the leader counts it, which decides quorum. A
# follower's own count may lag at 2 for a while: nats-server 2.9 learns
# its peers one by one, and quorum (2) is the same for 2 and for 3.
leader=$(status "$d/node1" | sed -n 's/.* leader=n\([0-9]\) .*/\1/p')
await "the meta leader counts three in its group" "$d/node${leader:-1}" \
    " size=3 "

check "the NATS client port is on loopback only" 0 \
    -m "127.0.0.1:$((port + 14))" \
    grep -h '^listen' "$d/node2/nats/nats.conf"
check "routes trust only admitted certificates (mutual TLS)" 0 \
    -m 'verify: true' grep -h 'verify' "$d/node2/nats/nats.conf"
check "the NATS client port refuses a client without the token" 0 \
    -m "Authorization Violation" \
    node "$top/tests/cluster/nats-raw.mjs" hello "$((port + 14))"
# (the token is in nats-server's environment only, not in a file)
check "the token is in no file of the node" 1 \
    grep -rqE '[0-9a-f]{64}' "$d/node2/nats/nats.conf"
token_of() {   # token_of I: node I's token, read where root can
    tr '\0' '\n' <"/proc/$(cat "$d/node$1/nats/nats.pid")/environ" \
        | sed -n 's/^PROVEN_NATS_TOKEN="\(.*\)"$/\1/p'
}
token=$(token_of 2)
check "and answers provend's own, which has it" 0 -m '^PONG$' \
    node "$top/tests/cluster/nats-raw.mjs" hello "$((port + 14))" "$token"

# ---- replicated data ------------------------------------------------------------

# (a JetStream cold start can take minutes to answer a node: a CI run saw
# one node's stream lookups unanswered past 40 s)
for i in 1 2 3; do
    EVENTUALLY_S=150 eventually "node $i applies the cluster's log" true sh -c \
        "PROVEN_DATA=$d/node$i '$proven' cluster status \
         | grep -q '\"ready\": true' && echo true"
done
check "each node shows the others' measurements" 0 \
    -m '"2": "[0-9a-f]{96}"' on 1 cluster status
check "KV written through node 2 answers its place in the log" 0 \
    -m '^\{"log_seq":[0-9]+,"revision":1\}$' \
    on 2 kv set --app shop greeting hello
applied=$(grep -o '"log_seq":[0-9]*' "$work/out" | cut -d: -f2)
check "read on node 3 after that place: at once" 0 -m '^hello$' \
    on 3 kv get --app shop greeting --after "$applied"
eventually "and on node 1 (without waiting for it)" hello \
    on 1 kv get --app shop greeting
check "a read after a place no node has reached waits, then says so" 1 \
    -m 'has not applied the cluster.s log up to 999999' \
    on 1 kv get --app shop greeting --after 999999

# an entry of the log published again, past JetStream's duplicate check
# (by anyone with the NATS token): every node applies it once
on 1 kv set --app replay k v1 >"$work/out"
first=$(grep -o '"log_seq":[0-9]*' "$work/out" | cut -d: -f2)
on 1 kv set --app replay k v2 >/dev/null
again=$(node "$top/tests/cluster/nats-raw.mjs" republish "$((port + 4))" \
        "$(token_of 1)" "$first")
case $again in [0-9]*) pass "entry $first published again, as $again" ;;
    *) fail "an entry published again" "$again" ;; esac
for i in 1 2 3; do
    check "node $i applies it once: the value stays v2" 0 -m '^v2$' \
        on "$i" kv get --app replay k --after "$again"
done
check "and counts it as a repeat" 0 -m '"repeats": ?[1-9][0-9]*,' on 2 cluster status
check "every node refuses a set at a stale revision alike" 1 \
    -m 'revision is 1, not 0' on 1 kv set --app shop greeting x --if-revision 0
check "a key store's key is made once: the same public key everywhere" 0 \
    -m '"revision":1' on 1 kv set --app shop --type key signer
eventually "(node 3 has it)" "$(on 1 kv get --app shop --type key signer)" \
    on 3 kv get --app shop --type key signer
check "SQL written through node 3" 0 -m '"changes":0' \
    on 3 sql --app shop "CREATE TABLE orders (id INTEGER PRIMARY KEY, \
                         item TEXT, at TEXT)"
check "an insert with datetime('now') through node 1" 0 -m '"changes":1' \
    on 1 sql --app shop "INSERT INTO orders (item, at) \
                         VALUES ('tea', datetime('now'))"
applied=$(grep -o '"log_seq":[0-9]*' "$work/out" | cut -d: -f2)
rows=$(on 1 sql --app shop "SELECT * FROM orders")
same "the same row on node 2, 'now' the writer's" "$rows" \
    on 2 sql --app shop "SELECT * FROM orders" --after "$applied"
check "random() is refused: replicas would not agree" 1 \
    -m 'random\(\) is not allowed in a cluster' \
    on 2 sql --app shop "INSERT INTO orders (item) VALUES (random())"

check "an app deployed on node 1" 0 -m '"seq":1' \
    on 1 app deploy "$top/examples/hello" --app hello
eventually "answers on node 2" '{"count":0}' curl -s "$(url 2 /app/hello/count)"
# a worker of node 2 sees its own socket directory, and no other node's data
w2=$(pgrep -f "proven-runtime.mjs serve --app hello --package - --listen $d/node2/" \
     | head -1)
same "a worker of node 2 sees no other node's data" "node2" \
    sh -c "ls /proc/$w2/root$d | xargs"
check "nor node 2's keys" 1 test -e "/proc/$w2/root$d/node2/keys"
check "its KV written through node 3" 0 -m '^\{"count":1\}$' \
    curl -s -X POST "$(url 3 /app/hello/count)"
eventually "is read through node 2" '{"count":1}' \
    curl -s "$(url 2 /app/hello/count)"
eventually "node 3 lists the app with its audit entry" 1 sh -c \
    "PROVEN_DATA=$d/node3 '$proven' app list | grep -c '\"seq\":1'"

# a session opened on node 1 is served by node 2, which hands its messages
# to node 1, where it lives: its identity at once, one seq for the cluster
# (a message accepted on node 1 is a replay on node 2), an Identify
# replayed after an Anonymize refused
on 1 status >"$work/status.json"
export PROVEN_STATUS=$work/status.json
same "a session opened on node 1 is served by node 2" "on A: anonymous
identify on A: success
on B: identified
replay on B: 409 replayed
then on A: identified
A's message replayed on B: 409 replayed
anonymize on A: success
Identify replayed on B: 409 replayed
then on B: anonymous
new session, first on B: anonymous" \
    node "$top/tests/rpc/failover.mjs" "$(url 1 '')" "$(url 2 '')" \
    "$d/node1/attestation/dev-root.pem"

# kill -9 the whole node leading the log stream (its provend, nats-server
# and nginx) during a stream of writes through another node: the others
# elect another leader and keep serving; no acknowledged write is lost;
# started again, the node catches up from the log
leader=$(log_leader 1)
case $leader in [123]) pass "the log stream has a leader: node $leader" ;;
                *) fail "the log stream has a leader" "none: '$leader'" ;; esac
others=$(for j in 1 2 3; do [ $j = "$leader" ] || echo $j; done | xargs)
writer=${others%% *} other=${others##* }
on "$leader" status >"$work/status-leader.json"
check "a session opened on node $leader" 0 -m '^saved: anonymous$' \
    env PROVEN_STATUS="$work/status-leader.json" \
    node "$top/tests/rpc/failover.mjs" save "$(url "$leader" '')" \
    "$d/node1/attestation/dev-root.pem" "$work/session.json"
# a passkey registered through node $leader: replicated, so it signs in
# through another node (which never ran a passkey command), and through
# node $leader again once it has come back from its log
check "a passkey registered through node $leader" 0 -m '^registered: success$' \
    env PROVEN_STATUS="$work/status-leader.json" \
    node "$top/tests/rpc/passkey-cluster.mjs" register "$(url "$leader" '')" \
    "$d/node1/attestation/dev-root.pem" "$work/passkey.json"
on "$other" status >"$work/status-other.json"
EVENTUALLY_S=30 eventually "it signs in through node $other, as its identity" \
    "login: success, the same identity" \
    env PROVEN_STATUS="$work/status-other.json" \
    node "$top/tests/rpc/passkey-cluster.mjs" login "$(url "$other" '')" \
    "$d/node1/attestation/dev-root.pem" "$work/passkey.json"
: >"$work/acked"
writes "$writer" 1 150 "$work/acked" &
writes_pid=$!
sleep 1
# each node runs in a process group of its own (setsid): all of it at once
pgid=$(ps -o pgid= -p "$(pgrep -f "provend --data $d/node$leader " \
                          | head -1)" | tr -d ' ')
kill -9 -- "-$pgid"
eventually "the app keeps answering on node $other" '{"count":1}' \
    curl -s "$(url "$other" /app/hello/count)"
check "ends with its node: used through node $other, 401" 0 \
    -m '^resumed: 401 unknown_session$' \
    node "$top/tests/rpc/failover.mjs" resume "$(url "$other" '')" \
    "$work/session.json"
wait "$writes_pid"
# (once the writes are done: on two cores they can hold an election back)
await "with node $leader killed, the others elect another JetStream leader" \
    "$d/node$writer" "routes=1 leader=n[^$leader] "
acked=$(wc -l <"$work/acked")
[ "$acked" -ge 100 ] && pass "writes go on through node $writer ($acked of 150)" \
    || fail "writes go on through node $writer" "$acked of 150 acknowledged"
eventually "node $writer holds every acknowledged write" 0 \
    missing "$writer" "$work/acked"
eventually "node $other holds every acknowledged write" 0 \
    missing "$other" "$work/acked"
check "a value read back is the one written" 0 -m '^v150$' \
    on "$other" kv get --app load k150
env PROVEN_DATA="$d" PROVEN_CLUSTER_PORT=$port \
    setsid "$top/nginx-conf/run-cluster.sh" --node "$leader" \
    >"$work/rejoin.log" 2>&1 &
rejoin_pid=$!
# a write as soon as its provend answers, before it has NATS or has applied
# the log, waits for it rather than fail
for _ in $(seq 1 300); do
    on "$leader" status >/dev/null 2>&1 && break
    sleep 0.05
done
check "a write to node $leader while it catches up waits, then succeeds" 0 \
    -m '^\{"log_seq":[0-9]+,"revision":1\}$' \
    on "$leader" kv set --app load early v0
await "node $leader, started again, rejoins both" "$d/node$leader" \
    "routes=2 leader=n[123] .*key=[0-9a-f]{16}$"
await "and the others route to it again" "$d/node$writer" \
    "routes=2 leader=n[123] "
eventually "node $leader catches up: every acknowledged write" 0 \
    missing "$leader" "$work/acked"
on "$leader" status >"$work/status-leader.json"
check "back from its log, node $leader signs the passkey in" 0 \
    -m '^login: success, the same identity$' \
    env PROVEN_STATUS="$work/status-leader.json" \
    node "$top/tests/rpc/passkey-cluster.mjs" login "$(url "$leader" '')" \
    "$d/node1/attestation/dev-root.pem" "$work/passkey.json"
eventually "and serves the app deployed before it died" '{"count":1}' \
    curl -s "$(url "$leader" /app/hello/count)"

# node $other cut off: its nats-server stopped (SIGSTOP), so its routes
# go quiet; the two others keep a majority and take writes; resumed, it
# comes back with the same data as they, never another version
cut=$other
npid=$(status "$d/node$cut" | grep -o 'pid=[0-9]*' | cut -d= -f2)
kill -STOP "$npid"
: >"$work/acked2"
writes "$writer" 151 200 "$work/acked2"
on "$writer" sql --app shop "INSERT INTO orders (item, at) \
                             VALUES ('cut', datetime('now'))" >/dev/null
acked=$(wc -l <"$work/acked2")
[ "$acked" = 50 ] && pass "with node $cut cut off, the majority takes writes" \
    || fail "with node $cut cut off, the majority takes writes" \
            "$acked of 50 acknowledged"
kill -CONT "$npid"
eventually "node $cut, back, holds every write made without it" 0 \
    missing "$cut" "$work/acked2"
keys_writer=$(on "$writer" kv keys --app load | md5sum)
eventually "its keys are the majority's" "$keys_writer" \
    sh -c "PROVEN_DATA=$d/node$cut '$proven' kv keys --app load | md5sum"
rows=$(on "$writer" sql --app shop "SELECT * FROM orders")
eventually "its SQL rows are the majority's" "$rows" \
    on "$cut" sql --app shop "SELECT * FROM orders"

# kill -9 node 2's nats-server: its provend starts another, which rejoins
old=$(status "$d/node2" | grep -o 'pid=[0-9]*' | cut -d= -f2)
kill -9 "$old"
await "a killed nats-server is restarted and rejoins" "$d/node2" \
    "^n2 n1:1 n3:1 routes=2 leader=n[123] size=[0-9] pid=[0-9]+ "
new=$(status "$d/node2" | grep -o 'pid=[0-9]*' | cut -d= -f2)
[ -n "$new" ] && [ "$new" != "$old" ] && pass "with a new process" \
    || fail "with a new process" "pid $old then $new"
eventually "and node 2 takes writes again" 0 sh -c \
    "PROVEN_DATA=$d/node2 '$proven' kv set --app shop after restart \
     >/dev/null && echo 0"

before=$(status "$d/node$writer" | grep -o 'key=[0-9a-f]*')
kill -TERM "$rejoin_pid" 2>/dev/null
wait "$rejoin_pid" 2>/dev/null
stop_cluster

# node 1, which made the key, loses it (new DATA): it asks the others
# before it would make another, and gets the same one back
rm "$d/node1/keys/cluster.key"
start_cluster ok PROVEN_CLUSTER_PORT=$port
await "node 1 gets the cluster key back from the others" "$d/node1" \
    "key=[0-9a-f]{16}$"
after=$(status "$d/node1" | grep -o 'key=[0-9a-f]*')
[ "$after" = "$before" ] && pass "the same key as before: no split" \
    || fail "the same key as before: no split" "$before then $after"
check "node 1 says where it came from" 0 \
    -m 'received the cluster key from an attested holder' \
    grep -h 'cluster key' "$d/node1/node.log"
stop_cluster

# ---- a node measuring other code ------------------------------------------------

# node 3 extends PCR 2 with one more file: the others must refuse it
echo "not the code the others run" >"$work/extra"
start_cluster odd PROVEN_CLUSTER_PORT=$((port + 50)) \
    PROVEN_NODE_ARGS_3="--measure 2:$work/extra"
d=$work/odd
await "nodes 1 and 2 admit each other" "$d/node1" \
    "^n1 n2:1 n3:0 routes=1 "
await "node 3 is refused by node 2 as well" "$d/node2" "^n2 n1:1 n3:0 "
# (node 3 may still be starting: the reason is a refused fetch until it is up)
for _ in $(seq 1 200); do
    PROVEN_DATA="$d/node1" "$proven" cluster status 2>/dev/null \
        | grep -q 'its PCR 2 is not this node' && break
    sleep 0.1
done
check "the refusal says which PCR differs" 0 \
    -m 'its PCR 2 is not this node' \
    env PROVEN_DATA="$d/node1" "$proven" cluster status
for _ in $(seq 1 200); do
    [ "$(PROVEN_DATA="$d/node3" "$proven" cluster status 2>/dev/null \
         | grep -c 'its PCR 2 is not this node')" = 2 ] && break
    sleep 0.1
done
await "node 1 holds the cluster key, node 3 never gets it" "$d/node1" \
    "key=[0-9a-f]{16}$"
sleep 3
check "node 3 has no cluster key" 0 -m '"key": null' \
    env PROVEN_DATA="$d/node3" "$proven" cluster status
check "and node 3 refuses both, for the same reason" 0 \
    -m '^2$' sh -c "PROVEN_DATA='$d/node3' '$proven' cluster status \
                    | grep -c 'its PCR 2 is not this node'"
stop_cluster

# ---- a node alone ---------------------------------------------------------------

mkdir -p "$work/alone"
"$build/bin/provend" --data "$work/alone" --provider dev --runtime none \
    >"$work/alone.log" 2>&1 &
alone_pid=$!
for _ in $(seq 1 250); do
    [ -S "$work/alone/provend.sock" ] && break
    sleep 0.02
done
check "a node alone has no cluster status" 1 -m 'runs alone' \
    env PROVEN_DATA="$work/alone" "$proven" cluster status
echo '{"cluster": "x", "node": "n1"}' >"$work/bad.json"
check "provend refuses a cluster file without its NATS ports" 1 \
    -m 'nats' "$build/bin/provend" --data "$work/alone2" --provider dev \
    --runtime none --cluster "$work/bad.json"
kill -TERM "$alone_pid" 2>/dev/null
wait "$alone_pid" 2>/dev/null

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
