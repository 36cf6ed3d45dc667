#!/bin/bash
# Sessions and signed RPC from outside: a local node (nginx-conf/run-local.sh,
# the `make run` script, on loopback ports of its own) with examples/hello
# deployed; tests/rpc/*.test.mjs, a client written from the protocol alone,
# speaking HTTP and WebSocket to it; the client package's tests (sdk/test);
# and examples/web in headless Chromium.
# Usage: tests/rpc.sh BUILD_DIR   (KEEP_WORK=1 keeps the logs and data)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-build}" && pwd)
work=$(mktemp -d)
data=$work/data
export PROVEN_DATA=$data PROVEN_BUILD=$build
# below Linux's ephemeral ports (32768 up): another connection may hold one
port=$((20000 + ($$ + 7) % 12000))
export PROVEN_HTTP_PORT=$port PROVEN_HTTPS_PORT=$((port + 1))
# a Radix Gateway stand-in (tests/radix/gateway.mjs): LinkRadix reads
# accounts' owner keys there
gateway_port=$((port + 2))
export PROVEN_RADIX_GATEWAY=http://127.0.0.1:$gateway_port
# sessions idle out after 3 s: the expiry test waits for it
# one session's messages past 50 a second (bursts of 100) are refused
export PROVEN_PROVEND_ARGS="--session-idle 3 --app-workers 2 --message-rate 50 --radix-gateway $PROVEN_RADIX_GATEWAY"
node_pid= gateway_pid=

cleanup() {
    if [ -n "$node_pid" ]; then
        kill -TERM "$node_pid" 2>/dev/null
        wait "$node_pid" 2>/dev/null
    fi
    if [ -n "$gateway_pid" ]; then
        kill -TERM "$gateway_pid" 2>/dev/null
        wait "$gateway_pid" 2>/dev/null
    fi
    [ -n "${KEEP_WORK:-}" ] && echo "# kept $work" || rm -rf "$work"
}
trap cleanup EXIT

node "$top/tests/radix/gateway.mjs" "$gateway_port" "$work/gateway.json" \
    >>"$work/gateway.log" 2>&1 &
gateway_pid=$!
setsid "$top/nginx-conf/run-local.sh" >>"$work/node.log" 2>&1 &
node_pid=$!
for _ in $(seq 1 250); do
    curl -sf "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
    sleep 0.04
done

"$build/bin/proven" app pack "$top/examples/hello" --out "$work/hello.pkg" \
    >/dev/null \
    && "$build/bin/proven" app deploy "$top/examples/hello" --app hello \
       >"$work/deploy.log" 2>&1 || {
    echo "# the node or the deploy failed:"; tail -20 "$work/node.log" \
        "$work/deploy.log"; exit 1; }
"$build/bin/proven" app deploy "$top/tests/radix/app" --app rnotes \
    >>"$work/deploy.log" 2>&1 || {
    echo "# the deploy of tests/radix/app failed:"; tail -5 "$work/deploy.log"
    exit 1; }
for _ in $(seq 1 250); do
    "$build/bin/proven" app list 2>/dev/null \
        | grep -q '"app":"hello".*"sockets":\["' && break
    sleep 0.04
done

export PROVEN_URL=http://127.0.0.1:$port
export PROVEN_ROOT=$data/attestation/dev-root.pem PROVEN_PACKAGE=$work/hello.pkg
# the PCRs clients expect, read over the node's own socket, not from it
"$build/bin/proven" status >"$work/status.json"
export PROVEN_STATUS=$work/status.json
rc=0
echo "# the protocol, from a client written from it alone"
node --test-reporter=spec --test "$top"/tests/rpc/*.test.mjs || rc=1
echo "# ROLA, checked against Radix's own packages (tests/radix)"
node --test-reporter=spec --test "$top"/tests/radix/*.test.mjs || rc=1
echo "# the client package (sdk/) in Node"
(cd "$top/sdk" && node --test-reporter=spec --test test/) || rc=1
echo "# examples/web in headless Chromium"
node --test-reporter=spec --test "$top/examples/web/browser.test.mjs" || rc=1
[ $rc = 0 ] || { echo "# node log:"; tail -30 "$work/node.log"; }
exit $rc
