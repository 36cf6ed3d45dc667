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

base=$(port_block 8)
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
    provend_pid=$!
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
data_pid=$provend_pid
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

check "an absent account's slots: zero, proved with it" 0 \
    -m "\"account\":null,\"slots\":\\{\"$(slot 1)\":\"0x0\"\\}" \
    call eth.account "{\"address\": \"0x00000000000000000000000000000000000000aa\", \"slots\": [\"$(slot 1)\"]}"
check "a slot asked twice: refused" 0 -m '"code":"bad_request".*asked for twice' \
    call eth.account "{\"address\": \"$contract\", \"slots\": [\"$(slot 1)\", \"$(slot 1)\"]}"

# ---- what a lying endpoint sends ----------------------------------------------------

mode fields
check "the endpoint's own fields (balance, nonce, storage hash, slot keys and values) are never read" 0 \
    -m "\"nonce\":\"0x1\",\"balance\":\"0x0\",\"storage_root\":\"0x[0-9a-f]{64}\".*\"slots\":\\{\"$(slot 0)\":\"0x1\",\"$(slot 1)\":\"0x2a\"\\}" \
    call eth.account "{\"address\": \"$contract\", \"slots\": [\"$(slot 0)\", \"$(slot 1)\"]}"
check "(the endpoint did change them)" 0 grep -q "applied fields eth_getProof" \
    "$work/liar.log"
check "(and the storage root is the proved one, not its storageHash)" 1 \
    grep -q "$(printf '22%.0s' $(seq 1 32))" "$work/out"
mode header
check "the checkpoint's header, once proved, is kept: a changed one later changes nothing" 0 \
    -m "\"block_hash\":\"$checkpoint\"" call eth.account "{\"address\": \"$sender\"}"
start_provend "$work/fresh" --eth-rpc "http://127.0.0.1:$liar" \
    --eth-checkpoint "$checkpoint"
check "a header whose state root was changed: not the checkpoint" 0 \
    -m '"code":"chain_unverified".*hashes to another block' \
    node "$top/tests/call.mjs" "unix:$work/fresh/provend.sock" eth.account \
    "{\"address\": \"$sender\"}"
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

# the same from the command line
check "proven eth account: the proved account and slots, as JSON" 0 \
    -m "\"$(slot 1)\": \"0x2a\"" \
    env PROVEN_DATA="$work/data" "$build/bin/proven" eth account "$contract" 0 0x1
check "proven eth account: not an address, a usage error" 2 \
    -m 'is not an address' "$build/bin/proven" eth account 0x12 0
check "proven eth account: a slot that is not a number, a usage error" 2 \
    -m 'slot abc is not a number' \
    "$build/bin/proven" eth account "$contract" abc

# answers too large, or not 200
mode huge
check "an answer over 256 KiB: refused, said" 0 \
    -m '"code":"chain_unverified".*eth_getProof: .*(larger|too large|256)' \
    call eth.account "{\"address\": \"$sender\"}"
mode status
check "an answer with HTTP 500: refused, said" 0 \
    -m '"code":"chain_unverified".*eth_getProof: HTTP status not 200' \
    call eth.account "{\"address\": \"$sender\"}"

# holds the answer back: one read at a time, ended within its 10 s
mode hang
call eth.account "{\"address\": \"$sender\"}" >"$work/held" 2>&1 &
held=$!
sleep 0.5
check "a second read while one is held back: busy" 0 \
    -m '"code":"busy".*one at a time' call eth.account "{\"address\": \"$sender\"}"
held_at=$SECONDS
wait "$held"
check "the held read ends within its 10 s, said" 0 \
    -m '"code":"chain_unverified".*eth_getProof.*(timed out|Timeout)' cat "$work/held"
check "(not before, not much after)" 0 test $((SECONDS - held_at)) -le 11
# held back again, and the node stops: at once
call eth.account "{\"address\": \"$sender\"}" >"$work/held" 2>&1 &
held=$!
sleep 0.5
stopped_at=$SECONDS
kill -TERM "$data_pid"
wait "$data_pid" 2>/dev/null
check "a stopping node ends a held read at once (not after its 10 s)" 0 \
    test $((SECONDS - stopped_at)) -le 3
wait "$held" 2>/dev/null
mode none

# a checkpoint the endpoint does not know (another chain's)
start_provend "$work/other" --eth-rpc "http://127.0.0.1:$liar" \
    --eth-checkpoint "0x$(printf '%064x' 7)"
check "a checkpoint the endpoint does not know: said" 0 \
    -m '"code":"chain_unverified".*eth_getBlockByHash: no result' \
    node "$top/tests/call.mjs" "unix:$work/other/provend.sock" eth.account \
    "{\"address\": \"$sender\"}"
# the endpoint away (a node that has not kept the header yet)
kill -TERM "${pids[1]}"
wait "${pids[1]}" 2>/dev/null
check "the endpoint away: said, not a hang" 0 \
    -m '"code":"chain_unverified".*(refused|connect)' \
    node "$top/tests/call.mjs" "unix:$work/fresh/provend.sock" eth.account \
    "{\"address\": \"$sender\"}"

echo "# $passed passed, $failed failed"
[ "$failed" = 0 ]
