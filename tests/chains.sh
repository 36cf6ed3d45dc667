#!/bin/bash
# provend's reads of an Ethereum chain (daemon/chains), each proved against
# a checkpoint block: ganache (npm, tests/chains) on loopback, reached
# through an endpoint that lies as the host could (tests/chains/liar.mjs).
# An account and its storage slots read as the chain holds them, an
# absent account said absent; a changed header, a changed proof node, a
# changed storage proof, an unknown checkpoint refused, saying what did
# not hold; the endpoint's own fields never read.
# Usage: tests/chains.sh BUILD_DIR   (KEEP_WORK=1 keeps the logs)
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

base=$((20000 + RANDOM % 20000))
chain=$base liar=$((base + 1))

spawn() {   # spawn NAME CMD...
    local name=$1; shift
    "$@" >>"$work/$name.log" 2>&1 &
    pids+=($!)
}

spawn ganache node "$top/tests/chains/ganache.mjs" "$chain" "$work/chain.json"
spawn liar node "$top/tests/chains/liar.mjs" "$liar" "$chain" "$work/mode"
for _ in $(seq 1 200); do
    [ -s "$work/chain.json" ] && break
    sleep 0.05
done
field() { node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1]))[process.argv[2]])' "$work/chain.json" "$1"; }
checkpoint=$(field checkpoint)
contract=$(field contract)
sender=$(field sender)

start_provend() {   # start_provend DATA [ARGS...]
    local d=$1; shift
    spawn "provend-${d##*/}" "$build/bin/provend" --data "$d" --provider dev \
        "$@"
    for _ in $(seq 1 200); do
        [ -S "$d/provend.sock" ] && return
        sleep 0.05
    done
}
call() { node "$top/tests/call.mjs" "unix:$work/data/provend.sock" "$@"; }
mode() { echo "$1" >"$work/mode"; }
slot() { printf '0x%064x' "$1"; }

# ---- bad options and input -------------------------------------------------------

check "--eth-rpc without --eth-checkpoint is refused at start" 1 \
    -m 'eth-checkpoint: a block hash .* is needed' \
    "$build/bin/provend" --data "$work/bad" --provider dev \
    --eth-rpc "http://127.0.0.1:$liar"
check "a checkpoint that is not a block hash is refused at start" 1 \
    -m 'eth-checkpoint: a block hash' \
    "$build/bin/provend" --data "$work/bad" --provider dev \
    --eth-rpc "http://127.0.0.1:$liar" --eth-checkpoint 0x1234
check "an endpoint that is not http(s) is refused at start" 1 \
    -m 'eth-rpc file:///x: an http\(s\) URL' \
    "$build/bin/provend" --data "$work/bad" --provider dev \
    --eth-rpc file:///x --eth-checkpoint "$checkpoint"

start_provend "$work/plain"
check "a node with no --eth-rpc says so" 0 \
    -m '"code":"chains_unavailable".*no --eth-rpc' \
    node "$top/tests/call.mjs" "unix:$work/plain/provend.sock" eth.account \
    "{\"address\": \"$sender\"}"

start_provend "$work/data" --eth-rpc "http://127.0.0.1:$liar" \
    --eth-checkpoint "$checkpoint"
check "an address that is not 20 bytes: refused" 0 \
    -m '"code":"bad_request".*address.. must be 0x and 40 hex digits' \
    call eth.account '{"address": "0x1234"}'
check "a slot that is not 32 bytes: refused" 0 \
    -m '"code":"bad_request".*each slot must be 0x and 64 hex digits' \
    call eth.account "{\"address\": \"$contract\", \"slots\": [\"0x0\"]}"
check "more than 16 slots: refused" 0 \
    -m '"code":"bad_request".*16 slots at most' \
    call eth.account "{\"address\": \"$contract\", \"slots\": [$(for i in $(seq 0 16); do printf '"%s",' "$(slot "$i")"; done | sed 's/,$//')]}"

# ---- read as the chain holds them ----------------------------------------------

mode none
check "a contract's account and slots, proved at the checkpoint" 0 \
    -m "\"block\":$(($(field number))),\"block_hash\":\"$checkpoint\",\"account\":\\{\"nonce\":\"0x1\",\"balance\":\"0x0\".*\"slots\":\\{\"$(slot 0)\":\"0x1\",\"$(slot 1)\":\"0x2a\",\"$(slot 2)\":\"0x0\"\\}" \
    call eth.account "{\"address\": \"$contract\", \"slots\": [\"$(slot 0)\", \"$(slot 1)\", \"$(slot 2)\"]}"
check "the sender's balance and nonce, as ganache has them there" 0 \
    -m "\"nonce\":\"$(field nonce)\",\"balance\":\"$(field balance)\"" \
    call eth.account "{\"address\": \"$sender\"}"
check "an address with no account: null" 0 -m '"account":null' \
    call eth.account '{"address": "0x00000000000000000000000000000000000000aa"}'

# ---- what a lying endpoint sends ----------------------------------------------------

mode fields
check "the endpoint's own balance, nonce and storage hash are never read" 0 \
    -m "\"nonce\":\"$(field nonce)\",\"balance\":\"$(field balance)\"" \
    call eth.account "{\"address\": \"$sender\"}"
mode header
check "a header whose state root was changed: not the checkpoint" 0 \
    -m '"code":"chain_unverified".*hashes to another block' \
    call eth.account "{\"address\": \"$sender\"}"
mode proof
check "an account proof with a byte changed: refused, the node named" 0 \
    -m '"code":"chain_unverified".*node [0-9]+ is not the one its parent names' \
    call eth.account "{\"address\": \"$sender\"}"
mode storage
check "a storage proof with a byte changed: refused" 0 \
    -m '"code":"chain_unverified".*is not the one its parent names' \
    call eth.account "{\"address\": \"$contract\", \"slots\": [\"$(slot 1)\"]}"
mode none
check "(and honest again: read)" 0 -m "\"$(slot 1)\":\"0x2a\"" \
    call eth.account "{\"address\": \"$contract\", \"slots\": [\"$(slot 1)\"]}"

# a checkpoint the endpoint does not know (another chain's)
start_provend "$work/other" --eth-rpc "http://127.0.0.1:$liar" \
    --eth-checkpoint "0x$(printf '%064x' 7)"
check "a checkpoint the endpoint does not know: said" 0 \
    -m '"code":"chain_unverified".*eth_getBlockByHash: no result' \
    node "$top/tests/call.mjs" "unix:$work/other/provend.sock" eth.account \
    "{\"address\": \"$sender\"}"
# the endpoint away
kill -TERM "${pids[1]}"
wait "${pids[1]}" 2>/dev/null
check "the endpoint away: said, not a hang" 0 \
    -m '"code":"chain_unverified".*(refused|connect)' \
    call eth.account "{\"address\": \"$sender\"}"

echo "# $passed passed, $failed failed"
[ "$failed" = 0 ]
