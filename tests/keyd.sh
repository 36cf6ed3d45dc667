#!/bin/bash
# keyd and enclave mode's master key, over the unix stand-in for vsock:
# keyd releases the key only to a fresh attestation of the right code, and
# what the host keeps, relays or replays gets it nothing.
# Usage: tests/keyd.sh BUILD_DIR
set -u
build=$(cd "${1:-build}" && pwd)
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
passed=0 failed=0
. "$top/tests/lib.sh"
bin=$build/bin
keyd_pid= mitm_pid=
cleanup() {
    for p in $keyd_pid $mitm_pid $(cat "$work"/*.pid 2>/dev/null); do
        kill "$p" 2>/dev/null
    done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

node=$work/node
export PROVEN_DATA=$node
head -c 144 /dev/urandom >"$work/pcrs.bin"     # this node's PCR0-2
head -c 144 /dev/urandom >"$work/other.bin"    # another image's

hex_pcrs() {   # hex_pcrs FILE: "0": "...", "1": ..., "2": ...
    perl -e 'open F, "<", $ARGV[0] or die; binmode F; read F, $b, 144;
             print join(", ", map { sprintf "\"%d\": \"%s\"", $_,
                 unpack("H*", substr($b, 48 * $_, 48)) } 0 .. 2)' "$1"
}
policy() {     # policy JSON-INSIDE-BRACES: keyd's policy, read per request
    echo "{$1}" >"$work/keyd/policy.json"
}

# provend ARGS...: in the background; its pid in $work/provend.pid; waits
# until it serves or exits; returns its exit status if it exited
# provend's arguments for this node's code: its PCRs, keyd's identity
this_code=(--provider dev --pcrs-file "$work/pcrs.bin"
           --keyd-identity "@$work/identity.hex" --keyd-wait 3)
provend() {
    rm -f "$node/provend.sock"
    "$bin/provend" --data "$node" "${this_code[@]}" "$@" \
        >"$work/provend.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$work/provend.pid"
    for _ in $(seq 1 300); do
        [ -S "$node/provend.sock" ] && return 0
        kill -0 "$pid" 2>/dev/null || { wait "$pid"; return $?; }
        sleep 0.05
    done
    return 0
}
stop_provend() {
    local pid
    pid=$(cat "$work/provend.pid" 2>/dev/null) || return 0
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rm -f "$work/provend.pid"
}
logged() {     # logged NAME REGEX FILE
    if grep -qE -- "$2" "$3"; then pass "$1"; else fail "$1" "no /$2/" "$3"; fi
}
refused() {    # refused NAME REGEX PROVEND-ARGS...: provend gives up, says why
    local name=$1 re=$2 rc; shift 2
    provend "$@"
    rc=$?
    stop_provend
    if [ "$rc" != 1 ]; then
        fail "$name" "provend exit $rc, want 1" "$work/provend.log"
    else
        logged "$name" "$re" "$work/provend.log"
    fi
}

"$bin/proven" keyd identity --dir "$work/keyd" >"$work/identity.hex"
check "keyd's identity is an Ed25519 public key" 0 -m '^[0-9a-f]{64}$' \
    cat "$work/identity.hex"
policy "\"pcrs\": {$(hex_pcrs "$work/pcrs.bin")}"
ours=unix:$work/keyd.sock

# ---- the release ---------------------------------------------------------

# provend starts first (it makes the dev root keyd trusts) and waits
"$bin/provend" --data "$node" --provider dev --pcrs-file "$work/pcrs.bin" \
    --keyd "$ours" --keyd-identity "@$work/identity.hex" --keyd-wait 30 \
    >"$work/provend.log" 2>&1 &
echo $! >"$work/provend.pid"
for _ in $(seq 1 100); do
    [ -s "$node/attestation/dev-root.pem" ] && break
    sleep 0.05
done
root=$node/attestation/dev-root.pem
"$bin/proven" keyd serve --dir "$work/keyd" --listen "$ours" --root "$root" \
    >"$work/keyd.log" 2>&1 &
keyd_pid=$!
for _ in $(seq 1 200); do
    [ -S "$node/provend.sock" ] && break
    sleep 0.05
done
logged "a node that started before keyd keeps asking, then gets its key" \
    'master key: released by keyd unix:.*key "master"' "$work/provend.log"
logged "keyd releases it for the policy's PCRs" \
    'released key "master" \(made now\) to proven-dev-.*the policy.s PCRs' \
    "$work/keyd.log"
check "storage works in enclave mode" 0 -m '"revision":1' \
    "$bin/proven" kv set --app vault secret s3cret
check "the master key is on the host's disk only sealed (60 bytes)" 0 \
    -m '^master.sealed 60$' sh -c "cd $node/keys && stat -c '%n %s' *"
stop_provend
provend --keyd "$ours"
same "started again, the node opens what it stored" s3cret \
    "$bin/proven" kv get --app vault secret
stop_provend

# ---- what keyd refuses ---------------------------------------------------------

policy "\"pcrs\": {$(hex_pcrs "$work/other.bin")}"
refused "other PCRs than the policy's get nothing" \
    "keyd refused: refused: its PCR 0 is not the policy's" --keyd "$ours"
logged "and keyd logs the refusal" 'refused a release: refused: its PCR 0' \
    "$work/keyd.log"

# the host's own node, outside any enclave, claiming this node's PCRs:
# its documents chain to a root of its own, not the one keyd trusts
policy "\"pcrs\": {$(hex_pcrs "$work/pcrs.bin")}"
node=$work/host-node
refused "a node that claims the PCRs under another root gets nothing" \
    "the document does not verify \(untrusted_root\)" --keyd "$ours"
node=$work/node

# releases: the policy names other PCRs and a release key
rk=$("$bin/proven" keyd release-key --key "$work/release.key")
"$bin/proven" keyd release-key --key "$work/stranger.key" >/dev/null
policy "\"pcrs\": {$(hex_pcrs "$work/other.bin")}, \"release_keys\": [\"$rk\"],
        \"min_release_version\": 2"
check "sign-release vouches for this node's PCRs" 0 \
    "$bin/proven" keyd sign-release --key "$work/release.key" --version 3 \
    --pcrs-file "$work/pcrs.bin" --out "$work/v3.rel"
provend --keyd "$ours" --keyd-release "$work/v3.rel"
same "a newer measurement a release key signed gets the same key" s3cret \
    "$bin/proven" kv get --app vault secret
stop_provend
logged "keyd says which release allowed it" 'release version 3' \
    "$work/keyd.log"
"$bin/proven" keyd sign-release --key "$work/stranger.key" --version 3 \
    --pcrs-file "$work/pcrs.bin" --out "$work/stranger.rel"
refused "a release signed by a key the policy does not list is refused" \
    "signed by a key the policy does not list" \
    --keyd "$ours" --keyd-release "$work/stranger.rel"
"$bin/proven" keyd sign-release --key "$work/release.key" --version 1 \
    --pcrs-file "$work/pcrs.bin" --out "$work/v1.rel"
refused "a release older than the policy's minimum is refused" \
    "release \(version 1\) is older than the policy allows \(2\)" \
    --keyd "$ours" --keyd-release "$work/v1.rel"
"$bin/proven" keyd sign-release --key "$work/release.key" --version 3 \
    --pcrs-file "$work/other.bin" --out "$work/elsewhere.rel"
refused "a release of other PCRs does not vouch for this node" \
    "its PCR 0 is not the one its release vouches for" \
    --keyd "$ours" --keyd-release "$work/elsewhere.rel"
"$bin/proven" keyd sign-release --key "$work/release.key" --version 3 \
    --pcr "1=$(tail -c +49 "$work/pcrs.bin" | head -c 48 | od -An -tx1 \
               | tr -d ' \n')" --out "$work/pcr1.rel"
refused "a release of PCR1 alone (which old images share) is refused" \
    "must vouch for PCR0, PCR1 and PCR2" \
    --keyd "$ours" --keyd-release "$work/pcr1.rel"
perl -e 'local $/; $_ = <STDIN>; substr($_, 20, 1) ^= "\x01"; print' \
    <"$work/v3.rel" >"$work/changed.rel"
refused "a changed release is refused" "signature does not verify" \
    --keyd "$ours" --keyd-release "$work/changed.rel"

# ---- the host on the path --------------------------------------------------

policy "\"pcrs\": {$(hex_pcrs "$work/pcrs.bin")}"
node "$top/tests/keyd/mitm.mjs" record "$work/mitm.sock" "$work/keyd.sock" \
    "$work/frame" &
mitm_pid=$!
sleep 0.3
provend --keyd "unix:$work/mitm.sock"
same "through a recording relay the node still gets its key" s3cret \
    "$bin/proven" kv get --app vault secret
stop_provend
check "the recorded release, sent again, gets nothing (single-use nonce)" 0 \
    -m "nonce is not the challenge this connection was given" \
    node "$top/tests/keyd/mitm.mjs" replay - "$work/keyd.sock" "$work/frame.2"
kill "$mitm_pid"; wait "$mitm_pid" 2>/dev/null

node "$top/tests/keyd/mitm.mjs" flip "$work/mitm.sock" "$work/keyd.sock" &
mitm_pid=$!
sleep 0.3
refused "an answer changed on the way is refused" \
    "not signed by the keyd this node trusts" --keyd "unix:$work/mitm.sock"
kill "$mitm_pid"; wait "$mitm_pid" 2>/dev/null

# a keyd of the host's own, with a policy that allows this node
mkdir -p "$work/impostor"
hex_pcrs "$work/pcrs.bin" | sed 's/^/{"pcrs": {/; s/$/}}/' \
    >"$work/impostor/policy.json"
"$bin/proven" keyd serve --dir "$work/impostor" \
    --listen "unix:$work/impostor.sock" --root "$root" \
    >"$work/impostor.log" 2>&1 &
mitm_pid=$!
sleep 0.3
refused "a keyd of the host's own is refused: not the pinned identity" \
    "not signed by the keyd this node trusts" \
    --keyd "unix:$work/impostor.sock"
kill "$mitm_pid"; wait "$mitm_pid" 2>/dev/null

# connections held open and silent delay nobody else's
for i in 1 2 3; do
    node -e 'require("net").connect(process.argv[1]); setTimeout(() => {}, 8000)' \
        "$work/keyd.sock" &
    echo $! >"$work/silent$i.pid"
done
sleep 0.3
provend --keyd "$ours"
same "with silent connections held open, a node still gets its key" s3cret \
    "$bin/proven" kv get --app vault secret
stop_provend
kill $(cat "$work"/silent*.pid) 2>/dev/null
rm -f "$work"/silent*.pid

check "garbage to keyd gets an error" 0 -m "bad_request" sh -c \
    "printf '\\000\\000\\000\\002\\377\\377' >$work/garbage;
     node $top/tests/keyd/mitm.mjs replay - $work/keyd.sock $work/garbage"

# ---- what the host's disk holds ---------------------------------------------

cp "$node/keys/master.sealed" "$work/sealed.good"
perl -e 'local $/; $_ = <STDIN>; substr($_, 30, 1) ^= "\x01"; print' \
    <"$work/sealed.good" >"$node/keys/master.sealed"
refused "a changed sealed master key does not open" \
    "master.sealed does not open with the key keyd released" --keyd "$ours"
rm "$node/keys/master.sealed"
refused "with the sealed key gone, no new key over stored data" \
    "storage exists but .*master.sealed is gone" --keyd "$ours"
head -c 32 /dev/urandom >"$node/keys/master.key"
refused "a master key in clear on the disk is refused" \
    "master.key is a master key in clear" --keyd "$ours"
rm "$node/keys/master.key"
cp "$work/sealed.good" "$node/keys/master.sealed"
provend --keyd "$ours"
same "the sealed key put back, the data opens" s3cret \
    "$bin/proven" kv get --app vault secret
stop_provend

# ---- sealed backups -----------------------------------------------------------

pd() {   # pd DATA ARGS...: this code on DATA asking our keyd, foreground
    local data=$1; shift
    "$bin/provend" --data "$data" "${this_code[@]}" --keyd "$ours" "$@"
}
check "a stopped node writes a sealed backup of its storage" 0 \
    -m 'backup: [0-9]+ files' pd "$node" --backup "$work/backup.bin"
check "none of the stored values is in it in clear" 1 \
    grep -qa s3cret "$work/backup.bin"
provend --keyd "$ours"
check "a running node is not backed up (its storage moves)" 1 \
    -m 'another provend .* uses .*: stop it first' \
    pd "$node" --backup "$work/busy.bin"
stop_provend
# another machine: the same code, an empty data directory (the test's
# dev root copied, as keyd trusts that one)
fresh() { rm -rf "$1"; mkdir -p "$1"; cp -r "$node/attestation" "$1/"; }
fresh "$work/restored"
check "restored by a node of the same code, with keyd's key" 0 \
    -m 'restore: [0-9]+ files' pd "$work/restored" --restore "$work/backup.bin"
node=$work/restored
provend --keyd "$ours"
same "the restored node serves what was stored" s3cret \
    env PROVEN_DATA="$node" "$bin/proven" kv get --app vault secret
stop_provend
node=$work/node
check "a restore over existing storage is refused" 1 -m 'already' \
    pd "$work/restored" --restore "$work/backup.bin"

policy "\"pcrs\": {$(hex_pcrs "$work/other.bin")}"
fresh "$work/other-code"
check "a node of other code restores nothing" 1 -m 'keyd refused' \
    pd "$work/other-code" --restore "$work/backup.bin"
check "and writes nothing" 1 test -e "$work/other-code/storage"
policy "\"pcrs\": {$(hex_pcrs "$work/pcrs.bin")}"

size=$(stat -c %s "$work/backup.bin")
perl -e 'local $/; $_ = <STDIN>; substr($_, $ARGV[0], 1) ^= "\x01"; print' \
    $((size - 40)) <"$work/backup.bin" >"$work/changed.bin"
fresh "$work/r2"
check "a changed chunk is refused" 1 -m 'does not open: the backup was changed' \
    pd "$work/r2" --restore "$work/changed.bin"
check "and nothing of it is written" 0 sh -c \
    "! test -e $work/r2/storage && ! test -e $work/r2/storage.restore \
     && ! test -e $work/r2/keys/master.sealed"
head -c $((size - 100)) "$work/backup.bin" >"$work/cut.bin"
check "a backup cut short is refused" 1 -m 'cut short' \
    pd "$work/r2" --restore "$work/cut.bin"
perl -e 'local $/; $_ = <STDIN>; substr($_, 40, 1) ^= "\x01"; print' \
    <"$work/backup.bin" >"$work/key-changed.bin"
check "so is one whose sealed master key was changed" 1 \
    -m 'master key does not open' pd "$work/r2" --restore "$work/key-changed.bin"
check "a backup into the storage it backs up is refused" 1 \
    -m 'inside the storage it backs up' \
    pd "$node" --backup "$node/storage/kv/backup.bin"
check "--backup without --keyd is refused" 1 -m 'needs --keyd' \
    "$bin/provend" --data "$work/r2" --provider dev --backup "$work/x.bin"

# ---- the cluster key, in enclave mode --------------------------------------------

# a cluster of one: alone, the node makes the cluster key, which then
# lives on disk only sealed
port=$((23000 + $$ % 100 * 10))
cat >"$work/cluster.json" <<JSON
{"cluster": "k", "node": "a",
 "nats": {"client": $port, "route": $((port + 1)), "monitor": $((port + 2))},
 "root": "$root", "match_pcrs": [0, 1, 2],
 "peers": []}
JSON
"$bin/proven" tls self-signed --dir "$node/tls" >/dev/null
provend --keyd "$ours" --cluster "$work/cluster.json"
for _ in $(seq 1 100); do
    grep -q 'made the cluster key' "$work/provend.log" && break
    sleep 0.1
done
stop_provend
logged "clustered, the node makes the cluster key and keeps it sealed" \
    'made the cluster key; kept on disk only sealed' "$work/provend.log"
check "the cluster key on disk is sealed (60 bytes), never in clear" 0 \
    -m '^cluster.sealed 60$' sh -c "cd $node/keys && stat -c '%n %s' cluster.*"
head -c 32 /dev/urandom >"$node/keys/cluster.key"
refused "a cluster key in clear on the disk is refused" \
    "cluster.key is a cluster key in clear" --keyd "$ours" \
    --cluster "$work/cluster.json"
rm "$node/keys/cluster.key"

# ---- usage -------------------------------------------------------------------------

check "--keyd without --keyd-identity is refused" 1 \
    -m "needs --keyd-identity" "$bin/provend" --data "$node" --provider dev \
    --keyd "$ours"
check "a bad key id is refused" 1 -m "keyd-key-id" \
    "$bin/provend" --data "$node" --provider dev --keyd "$ours" \
    --keyd-identity "@$work/identity.hex" --keyd-key-id "../x"
check "a policy that allows nothing stops keyd from starting" 1 \
    -m "allows nothing" sh -c "mkdir -p $work/empty && echo '{}' \
        >$work/empty/policy.json && '$bin/proven' keyd serve \
        --dir $work/empty --listen unix:$work/empty.sock"
check "a policy of PCR0 alone stops keyd from starting" 1 \
    -m "must name PCR0, PCR1 and PCR2" sh -c "echo '{\"pcrs\": {\"0\": \"00\"}}' \
        >$work/empty/policy.json && '$bin/proven' keyd serve \
        --dir $work/empty --listen unix:$work/empty.sock"
cp "$work/identity.hex" "$node/identity.hex"
check "a pinned identity on the host's disk (under --data) is refused" 1 \
    -m "under --data" "$bin/provend" --data "$node" --provider dev \
    --keyd "$ours" --keyd-identity "@$node/identity.hex"
check "sign-release without PCRs is a usage error" 2 \
    "$bin/proven" keyd sign-release --key "$work/release.key" --out /dev/null

echo "# keyd: $passed passed, $failed failed"
[ "$failed" = 0 ]
