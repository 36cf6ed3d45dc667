#!/bin/bash
# Applications as a developer and an operator see them: a local node
# (nginx-conf/run-local.sh on loopback ports of its own), `proven app`
# deploy, list, audit, rollback, owners and logs, examples/hello called with
# curl before and after the node restarts, a worker killed and replaced,
# the pool growing, shrinking, idling and waking, streamed bodies, and what
# is refused: bad packages, strangers' keys, bad names.
# Usage: tests/apps.sh BUILD_DIR   (KEEP_WORK=1 keeps the logs and data)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-build}" && pwd)
proven=$build/bin/proven
work=$(mktemp -d)
data=$work/data
export PROVEN_DATA=$data PROVEN_BUILD=$build
# ports of our own, away from make run's 8080/8443 and below Linux's
# ephemeral ports (32768 up), which another connection may hold
port=$((20000 + $$ % 12000))
export PROVEN_HTTP_PORT=$port PROVEN_HTTPS_PORT=$((port + 1))
# a pool of two at most, and apps idle after 15 s (the pool section)
export PROVEN_PROVEND_ARGS="--app-workers 2 --app-idle 15"
url=http://127.0.0.1:$port/app
passed=0 failed=0
node_pid=

. "$(dirname "$0")/lib.sh"

stop_node() {
    if [ -n "$node_pid" ]; then
        kill -TERM "$node_pid" 2>/dev/null
        wait "$node_pid" 2>/dev/null
        node_pid=
    fi
}

cleanup() {
    stop_node
    [ -n "${KEEP_WORK:-}" ] && echo "# kept $work" || rm -rf "$work"
}
trap cleanup EXIT

start_node() {
    setsid "$top/nginx-conf/run-local.sh" >>"$work/node.log" 2>&1 &
    node_pid=$!
    for _ in $(seq 1 250); do
        curl -sf "http://127.0.0.1:$port/" >/dev/null 2>&1 && return 0
        kill -0 "$node_pid" 2>/dev/null || break
        sleep 0.04
    done
    echo "# the node did not start:"; tail -20 "$work/node.log"
    return 1
}

# serving APP: its worker is up (the state page lists it).
serving() {
    for _ in $(seq 1 250); do
        "$proven" app list 2>/dev/null | grep -q "\"app\":\"$1\".*\"sockets\":\\[\"" \
            && return 0
        sleep 0.04
    done
    return 1
}

# await_get PATH BODY: until GET PATH answers BODY (a new worker, 5 s at most)
await_get() {
    for _ in $(seq 1 100); do
        [ "$(curl -s "$url/$1")" = "$2" ] && return 0
        sleep 0.05
    done
    return 1
}

app() { "$proven" app "$@"; }
get() { curl -s "$url/$1"; }
post() { curl -s -X POST "$url/$1" "${@:2}"; }

start_node || { echo "0 passed, 1 failed"; exit 1; }

# ---- pack and deploy -------------------------------------------------------

id=$(app pack "$top/examples/hello")
check "pack prints a package id" 0 -m '^[0-9a-f]{64}$' echo "$id"
same "pack is stable" "$id" app pack "$top/examples/hello"
check "deploy records entry 1 with that package" 0 \
    -m "\"seq\":1,.*\"package\":\"$id\"" \
    app deploy "$top/examples/hello" --app hello
check "the first deploy made the owner key, 0600" 0 -m '^600$' \
    stat -c %a "$data/keys/owner.pem"
serving hello && pass "the worker of hello starts" \
    || fail "the worker of hello starts" "not listed as serving"

# ---- the worker's process sandbox --------------------------------------------

wpid=$(pgrep -f "^node .*proven-runtime.mjs serve --app hello" | head -1)
same "the worker's network namespace has only lo" lo \
    sh -c "tail -n +3 /proc/$wpid/net/dev | cut -d: -f1 | tr -d ' '"
same "the worker runs under a seccomp filter" 2 \
    awk '/^Seccomp:/ { print $2 }' "/proc/$wpid/status"
same "the worker cannot gain privileges" 1 \
    awk '/^NoNewPrivs:/ { print $2 }' "/proc/$wpid/status"
same "the worker holds no capability" 0000000000000000 \
    awk '/^CapEff:/ { print $2 }' "/proc/$wpid/status"
check "the worker sees no keys, storage or provend socket" 0 \
    -m '^0$' sh -c "ls /proc/$wpid/root$data | grep -c -v '^run$' || true"
check "and no other process" 0 -m '^[1-3]$' \
    sh -c "ls /proc/$wpid/root/proc | grep -c '^[0-9]'"
scratch=$(mktemp /tmp/proven-scratch.XXXXXX)
check "/tmp is the worker's own: a file in the node's is not there" 1 \
    test -e "/proc/$wpid/root$scratch"
rm -f "$scratch"
if [ "$(id -u)" = 0 ]; then
    wuid=$(awk '/^Uid:/ { print $2 }' "/proc/$wpid/status")
    check "provend runs as root, the worker as its app's own user" 0 \
        test "$wuid" -ge $((0x70000000))
    same "which owns its socket directory" "$wuid" \
        stat -c %u "$data/run/apps/hello"
fi
check "a sandbox that cannot hide the data directory runs nothing" 126 \
    -m "cannot hide the data directory.*does not run" \
    "$build/bin/provend" --sandbox-exec --hide /etc/passwd -- \
    sh -c 'echo ran'
mkdir -p "$work/sbx/keep"
same "a worker starts in /, not in the hidden directory" / sh -c \
    "cd '$work/sbx' && '$build/bin/provend' --sandbox-exec --hide '$work/sbx' \
     --keep '$work/sbx/keep' -- sh -c pwd"
"$build/bin/provend" --sandbox-exec --hide "$work/sbx" --keep "$work/sbx/keep" \
    -- sleep 60 &
waiter=$!
inner=
for _ in $(seq 1 100); do
    inner=$(pgrep -P "$waiter" sleep) && break
    sleep 0.05
done
kill -KILL "$waiter"
wait "$waiter" 2>/dev/null
for _ in $(seq 1 40); do
    kill -0 "$inner" 2>/dev/null || break
    sleep 0.05
done
same "a worker dies with the process provend started (even as nobody)" \
    gone sh -c "[ -n '$inner' ] && ! kill -0 '$inner' 2>/dev/null && echo gone"
check "inside the sandbox an inet socket is refused" 2 \
    -m "inet: Permission denied" "$build/bin/provend" --sandbox-exec -- \
    perl -e 'use Socket; socket(S, PF_INET, SOCK_STREAM, 0) or do { print "inet: $!\n"; exit 2 }'
check "inside the sandbox no namespace can be made" 1 \
    -m "Operation not permitted" "$build/bin/provend" --sandbox-exec -- \
    unshare --user --net true
check "and a unix socket is not" 0 "$build/bin/provend" --sandbox-exec -- \
    perl -e 'use Socket; socket(S, PF_UNIX, SOCK_STREAM, 0) or exit 2'

# after an escape from V8: no terminal to type into, no host but the
# system's files and its own socket directory, devices null, zero, urandom
pvd=$(pgrep -f "provend --data $data " | head -1)
check "the worker has a session of its own, no terminal" 0 -m '^differ \?$' \
    sh -c "[ \"\$(ps -o sid= -p $wpid)\" != \"\$(ps -o sid= -p $pvd)\" ] \
           && echo \"differ \$(ps -o tty= -p $wpid)\""
check "and IPC and UTS namespaces of its own" 0 -m '^differ differ$' \
    sh -c "for n in ipc uts; do [ \"\$(readlink /proc/$wpid/ns/\$n)\" != \
           \"\$(readlink /proc/$pvd/ns/\$n)\" ] && echo differ; done | xargs"
check "the memory killer takes the worker first (oom_score_adj 1000)" 0 \
    -m '^1000$' cat "/proc/$wpid/oom_score_adj"
for req in 0x5412:TIOCSTI 0x541C:TIOCLINUX; do
    check "ioctl ${req#*:} is refused inside the sandbox" 2 \
        -m "Operation not permitted" "$build/bin/provend" --sandbox-exec -- \
        perl -e "my \$c = 'x'; ioctl(STDIN, ${req%%:*}, \$c) and exit 0;
                 print \"\$!\\n\"; exit 2"
done
same "the worker's /dev: null, zero, urandom and the fd links" \
    "fd null stderr stdin stdout urandom zero" \
    sh -c "ls /proc/$wpid/root/dev | xargs"
check "the runtime directory is read-only to the worker" 1 \
    -m "Read-only file system" \
    touch "/proc/$wpid/root$top/runtime/lib/sandbox.mjs"
check "nothing else of the checkout is there" 1 \
    test -e "/proc/$wpid/root$top/Makefile"
same "nor /run, /home, /root or /var" none \
    sh -c "for d in run home root var/lib; do \
           [ -e /proc/$wpid/root/\$d ] && echo \$d; done; echo none"
mkdir -p "$work/minimal/keep"
minimal() {   # minimal CMD: CMD's output in a minimal root over $work/minimal
    "$build/bin/provend" --sandbox-exec --hide "$work/minimal" \
        --keep "$work/minimal/keep" --keep-ro "$top/runtime" -- sh -c "$1"
}
same "in the minimal root, of the data directory: its socket directory" \
    keep minimal "ls '$work/minimal'"
same "of the checkout: the runtime" runtime minimal "ls '$top'"
first=${top#/}; first=${first%%/*}
same "and at the top, the system's directories only" "" \
    sh -c "'$build/bin/provend' --sandbox-exec --hide '$work/minimal' \
           --keep '$work/minimal/keep' -- ls / | grep -vx \
           'bin\\|dev\\|etc\\|lib\\|lib32\\|lib64\\|libx32\\|proc\\|sbin\\|tmp\\|usr\\|var\\|$first' \\
           || true"

# ---- examples/hello through nginx -------------------------------------------

same "GET /count starts at 0" '{"count":0}' get hello/count
same "POST /count increments" '{"count":1}' post hello/count
pids=()
for _ in $(seq 1 10); do post hello/count >/dev/null & pids+=($!); done
wait "${pids[@]}"
same "ten concurrent increments lose none" '{"count":11}' get hello/count
check "POST /items stores an item in SQL" 0 \
    -m '^\{"id":1,"text":"buy milk","created":[0-9]+\}$' \
    post hello/items -d 'buy milk'
check "GET /items lists it" 0 -m '^\[\{"id":1,"text":"buy milk"' \
    get hello/items
check "GET /items/2 is the app's own 404" 0 -m '"no such item"' \
    get hello/items/2
same "an empty item is the app's own 400" 400 \
    curl -s -o /dev/null -w '%{http_code}' -X POST "$url/hello/items" -d ' '
check "the public audit log lists the deploy with the pack id" 0 \
    -m "\"action\":\"deploy\",\"package\":\"$id\"" get hello/audit

# ---- the node restarts ---------------------------------------------------------

stop_node
start_node && serving hello
same "after a restart the count is kept" '{"count":11}' get hello/count
check "after a restart the items are kept" 0 -m '"buy milk"' get hello/items
check "after a restart the audit log still verifies" 0 \
    -m '"entries":1,.*"verified":true' app audit hello

# ---- a worker dies -----------------------------------------------------------

check "a second app deploys" 0 -m '"seq":1' app deploy "$top/t/apps/web" --app web
serving web
sock=$(app list | grep '"app":"hello"' | grep -o '"sockets":\["[^"]*"')
pkill -KILL -f "^node .*proven-runtime.mjs serve --app hello"
same "while hello's worker is down, another app answers" plain get web/text
# a worker the pool retires meanwhile (it grew under the streams above) is
# gone before it is looked at: another one is
for _ in $(seq 1 10); do
    wpid=$(pgrep -f "^node .*proven-runtime.mjs serve --app web" | tail -1)
    [ -n "$wpid" ] && [ -e "/proc/$wpid/root" ] && sleep 0.2 \
        && [ -e "/proc/$wpid/root" ] && break
    sleep 0.2
done
same "a worker sees its own app's socket directory only" web \
    ls "/proc/$wpid/root$data/run/apps"
await_get hello/count '{"count":11}'
same "a killed worker is replaced and serves again" '{"count":11}' \
    get hello/count
check "on a new socket" 0 -m '"sockets":\["/' sh -c \
    "'$proven' app list | grep '\"app\":\"hello\"' | grep -v -F '$sock'"

# ---- a pool sized by load; an idle app sleeps and wakes -----------------------

# workers APP: how many workers serve it
workers() {
    app list | grep "\"app\":\"$1\"" | grep -o '"[^"]*\.sock"' | wc -l
}
# await_workers APP N SECONDS
await_workers() {
    for _ in $(seq 1 $(($3 * 10))); do
        [ "$(workers "$1")" = "$2" ] && return 0
        sleep 0.1
    done
    return 1
}

same "web starts with one worker" 1 workers web
pids=()
for _ in 1 2 3; do
    (end=$((SECONDS + 12))
     while [ $SECONDS -lt $end ] && [ "$(workers web)" != 2 ]; do
         curl -s "$url/web/spin?ms=100" >/dev/null
     done) &
    pids+=($!)
done
await_workers web 2 12 && pass "under load web's pool grows to two" \
    || fail "under load web's pool grows to two" "$(app list | grep web)"
wait "${pids[@]}"
await_workers web 1 16 && pass "without load it shrinks back to one" \
    || fail "without load it shrinks back to one" "$(app list | grep web)"
await_workers web 0 10 && pass "an app without calls goes idle" \
    || fail "an app without calls goes idle" "$(app list | grep web)"
check "the list says so; hello (it has a schedule) never idles" 0 \
    -m '"app":"hello".*"idle":false' sh -c \
    "'$proven' app list | grep '\"app\":\"web\".*\"idle\":true' \
     && '$proven' app list | grep '\"app\":\"hello\"'"
pids=()
for i in 1 2 3 4 5; do
    curl -s -X PUT --data-binary "wake $i" "$url/web/echo" >"$work/wake.$i" &
    pids+=($!)
done
wait "${pids[@]}"
same "five requests (with bodies) at once wake it; each gets its answer" \
    "$(printf 'wake %s\n' 1 2 3 4 5)" \
    sh -c "for i in 1 2 3 4 5; do cat '$work/wake.'\$i; echo; done"
same "by one worker" 1 workers web

# ---- a streamed body to a slow reader -------------------------------------------

same "8 MiB streamed to a reader at 4 MiB/s arrive whole" 8388608 sh -c \
    "curl -s --limit-rate 4M '$url/web/stream-big/128' | wc -c"

# 300 readers that go away mid-stream: each stream is cancelled (a worker
# keeps at most 256 open), so the next reader is served
pids=()
for _ in $(seq 1 300); do
    curl -s -m 0.5 "$url/web/stream-big/100000" >/dev/null &
    pids+=($!)
    if [ ${#pids[@]} -ge 30 ]; then
        wait "${pids[@]}"
        pids=()
    fi
done
same "readers that leave free their streams: the next one is served" \
    "$(printf '0\n1\n2')" get web/stream/3

# ---- new versions, rollback -----------------------------------------------------

cp -r "$top/examples/hello" "$work/hello2"
sed -i 's/count: Number/count: 1000 + Number/' "$work/hello2/index.js"
id2=$(app pack "$work/hello2")
check "a second deploy is entry 2" 0 -m "\"seq\":2,.*\"package\":\"$id2\"" \
    app deploy "$work/hello2" --app hello
await_get hello/count '{"count":1011}'
same "the new code serves, with the same data" '{"count":1011}' \
    get hello/count
check "rollback goes back to the first package" 0 \
    -m "\"seq\":3,.*\"package\":\"$id\".*\"action\":\"rollback\"" \
    app rollback hello
await_get hello/count '{"count":11}'
same "the old code serves again" '{"count":11}' get hello/count
check "rollback --to a package never deployed is refused" 1 \
    -m "earlier deployed package" \
    app rollback hello --to "$(printf '%064d' 7)"

# ---- owners ------------------------------------------------------------------------

openssl genpkey -algorithm ed25519 -out "$work/other.pem" 2>/dev/null
other=$(openssl pkey -in "$work/other.pem" -pubout -outform DER \
        | tail -c 32 | od -An -tx1 | tr -d ' \n')
check "a stranger's key cannot deploy" 1 -m "forbidden.*not an owner" \
    app deploy "$top/examples/hello" --app hello --owner-key "$work/other.pem"
check "an owner adds a second owner" 0 -m '"action":"add_owner"' \
    app owner add hello "$other"
check "the new owner deploys" 0 -m '"seq":5' \
    app deploy "$work/hello2" --app hello --owner-key "$work/other.pem"
first=$(app audit hello | tail -1 | grep -o '"owners":\["[0-9a-f]*' \
        | cut -d'"' -f4)
check "the new owner removes the first" 0 -m '"action":"remove_owner"' \
    app owner remove hello "$first" --owner-key "$work/other.pem"
check "the removed owner can no longer deploy" 1 -m "not an owner" \
    app deploy "$top/examples/hello" --app hello
check "the last owner cannot be removed" 1 -m "last owner" \
    app owner remove hello "$other" --owner-key "$work/other.pem"
check "the audit log verifies all six entries" 0 \
    -m '"entries":6,.*"verified":true' app audit hello
check "audit prints one line per entry" 0 -m '^\{"seq":6,' \
    sh -c "'$proven' app audit hello | sed -n 6p"

# ---- refusals ------------------------------------------------------------------

mkdir -p "$work/broken"
echo 'export const x = ;' >"$work/broken/index.js"
check "a package that does not parse is refused by pack" 1 \
    -m "SyntaxError|Unexpected" app deploy "$work/broken" --app broken
echo 'import fs from "node:fs"; export const x = fs;' >"$work/broken/index.js"
check "a package importing node: is refused" 1 -m "only relative imports" \
    app deploy "$work/broken" --app broken
same "no trace of the refused app" 0 \
    sh -c "'$proven' app list | grep -c broken || true"
check "a name starting with _ is the node's own" 1 -m "not starting with _" \
    app deploy "$top/examples/hello" --app _proven
check "the node's own scope is out of reach of kv" 1 -m "node's own" \
    "$proven" kv get --app _proven x
check "an unknown app's audit is not found" 1 -m "not_found" \
    app audit nobody
check "an unknown action is a usage error" 2 app frobnicate
check "deploy without --app is a usage error" 2 \
    app deploy "$top/examples/hello"
check "logs of an app" 0 app logs hello
check "unknown app over HTTP is 404 JSON" 0 -m '"app_not_found"' \
    get nobody/count

# ---- a worker's line to provend serves its own app's storage only -------------

d2=$work/d2
fake=$work/fake-runtime
mkdir -p "$fake/lib" "$fake/node_modules"
cp -r "$top/tests/fixtures/fake-runtime/bin" "$fake/"
cp "$top/runtime/lib/frames.mjs" "$fake/lib/"
cp -r "$top/runtime/node_modules/cborg" "$fake/node_modules/"
"$build/bin/provend" --data "$d2" \
    --provider dev --runtime "$fake" \
    >>"$work/d2.log" 2>&1 &
d2_pid=$!
for _ in $(seq 1 250); do
    "$proven" status --socket "$d2/provend.sock" >/dev/null 2>&1 && break
    sleep 0.04
done
"$proven" kv set --socket "$d2/provend.sock" --app victim secret kept \
    >/dev/null
PROVEN_DATA=$d2 app deploy "$top/examples/hello" --app intruder \
    >/dev/null 2>&1
for _ in $(seq 1 250); do
    grep -q 'apps: intruder: fake-runtime:' "$work/d2.log" && break
    sleep 0.04
done
# (its standard error reaches provend's log, under its app's name)
same "a worker's line: its own app's storage, nothing else" \
    "fake-runtime: 1 ok,2 forbidden,3 forbidden,4 forbidden,5 forbidden,6 forbidden,7 forbidden,8 forbidden,9 forbidden,10 forbidden" \
    grep -o 'fake-runtime: .*' "$work/d2.log"
same "the other app's value is untouched" kept \
    "$proven" kv get --socket "$d2/provend.sock" --app victim secret
kill -TERM "$d2_pid"
wait "$d2_pid" 2>/dev/null

# ---- one cap on all workers: the app called least recently idles ----------

d3=$work/d3
"$build/bin/provend" --data "$d3" --provider dev --app-memory 64 \
    --app-memory-total 128 --app-workers 1 >>"$work/d3.log" 2>&1 &
d3_pid=$!
for _ in $(seq 1 250); do
    "$proven" status --socket "$d3/provend.sock" >/dev/null 2>&1 && break
    sleep 0.04
done
# examples/hello's every-minute schedule calls each app at the minute's
# start: the three deploys stay clear of it, so that "one" is the app
# called least recently
while [ "$((10#$(date +%S)))" -ge 45 ]; do
    sleep 0.5
done
for a in one two three; do
    PROVEN_DATA=$d3 app deploy "$top/examples/hello" --app $a >/dev/null 2>&1
done
same "under a cap of two workers, the third app's start idles the first" \
    "one:0 three:1 two:1" sh -c "PROVEN_DATA=$d3 '$proven' app list \
    | grep -o '\"app\":\"[a-z]*\".*' | sed -E \
      's/^\"app\":\"([a-z]+)\".*\"sockets\":\[([^]]*)\].*/\1:\2/' \
    | sed -E 's/:\".*/:1/; s/:\$/:0/' | sort | xargs"
check "and says why" 0 -m "one is idled, the app called least recently" \
    cat "$work/d3.log"
kill -TERM "$d3_pid"
wait "$d3_pid" 2>/dev/null

# ---- schedules: provend fires the heartbeat at each minute's start ------------

for _ in $(seq 1 150); do
    get hello/heartbeat | grep -q '"last":"20' && break
    sleep 0.5
done
check "the every-minute schedule has run" 0 \
    -m '^\{"last":"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:00.000Z"\}$' \
    get hello/heartbeat

# ---- a deploy returns once its version serves ------------------------------------

# Each round deploys a new version and asks at once: the answer is that
# version's, never the one before it nor 404 (DEPLOY_ROUNDS, default 10).
mkdir -p "$work/ver"
rounds=${DEPLOY_ROUNDS:-10} served=0
for i in $(seq 1 "$rounds"); do
    cat >"$work/ver/index.js" <<JS
import { runOnHttp } from '@proven-network/handler';
export const version = runOnHttp({ path: '/version' }, () => 'v$i');
JS
    app deploy "$work/ver" --app ver >"$work/out" 2>&1 || break
    [ "$(get ver/version)" = "v$i" ] || break
    served=$((served + 1))
done
same "a request right after each deploy gets that version ($rounds rounds)" \
    "$rounds" echo "$served"

# ---- a worker that cannot start: the request waiting for it is told -----------

stop_node
PROVEN_PROVEND_ARGS="--node $work/no-such-node" start_node
check "no worker can start: 502, the worker did not start" 0 \
    -m '^502 .*"code":"worker_unavailable".*(did not start|not ready yet)' \
    sh -c "curl -s -m 10 -w '%{http_code} ' -o '$work/body' '$url/web/text'; cat '$work/body'"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
