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
    local name=$1 re=$2 rc pid; shift 2
    provend "$@"
    rc=$?
    # its socket may come before a refusal later in its start: a moment
    # for it to give up (slower under ASan)
    pid=$(cat "$work/provend.pid" 2>/dev/null)
    for _ in $(seq 1 60); do
        [ "$rc" = 0 ] && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if [ "$rc" = 0 ] && [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid"
        rc=$?
        rm -f "$work/provend.pid"
    fi
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
export PROVEN_DATA=$node
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

# ---- a running node's backups -------------------------------------------------

# one writer, one write at a time, each a KV key and an SQL row; the last
# it has had answered before the backup was asked is noted: that one and
# every one before must be in the backup, KV and SQL of one moment (the
# SQL row of the write under way may be missing), nothing after a gap.
# 6 MB in each first, so that the backup takes long enough for many
# writes to come while it is written
provend --keyd "$ours"
node "$top/tests/keyd/writer.mjs" "$node/provend.sock" fill
echo 0 >"$work/acked"
node "$top/tests/keyd/writer.mjs" "$node/provend.sock" write 3000 \
    "$work/acked" &
writer_pid=$!
for _ in $(seq 1 100); do
    [ "$(cat "$work/acked")" -ge 100 ] && break
    sleep 0.05
done
before=$(cat "$work/acked")
check "a running node writes a sealed backup as it serves" 0 \
    -m '^\{"bytes":[0-9]+,"files":[0-9]+,"chunks":[0-9]+,"paused_ms":[0-9]+,"file":' \
    "$bin/proven" backup "$work/live.bin"
echo "# proven backup: $(head -c 200 "$work/out")"
wait "$writer_pid"
check "the writes went on: all 3000 answered" 0 -m '^3000$' cat "$work/acked"
check "provend's copy is gone once taken" 1 test -e "$node/backups/backup.pbk"
check "none of the stored values is in it in clear" 1 \
    grep -qa s3cret "$work/live.bin"
logged "keyd was told of it: now the newest backup of the key" \
    'released key "master".*its backup is now the newest' "$work/keyd.log"
check "a second backup to the same file is refused (it exists)" 1 \
    -m 'exists' "$bin/proven" backup "$work/live.bin"
stop_provend

# a pending backup (proven-host run --restore) restored at the start
fresh "$work/r3"
cp "$work/live.bin" "$work/r3/pending.bin"
node=$work/r3
export PROVEN_DATA=$node
provend --keyd "$ours" --restore-pending "$node/pending.bin"
logged "a node started with a pending backup restores it, then runs" \
    'restore: [0-9]+ files .* into .*listening on' \
    <(tr '\n' ' ' <"$work/provend.log"; echo)
same "what was stored before the writes is in it" s3cret \
    "$bin/proven" kv get --app vault secret
"$bin/proven" kv keys --app vault --prefix w | sed 's/^w//' | sort -n \
    >"$work/kv-keys"
"$bin/proven" sql --app vault "SELECT n FROM t ORDER BY n" \
    | sed 's/[^0-9]//g' >"$work/sql-rows"
got=$(wc -l <"$work/kv-keys")
check "every write answered before the backup is in it ($before), no gap" 0 \
    sh -c "[ $got -ge $before ] && seq 1 $got | cmp -s - '$work/kv-keys'"
check "and the backup was made while the writes went on ($got of 3000)" 0 \
    test "$got" -lt 3000
check "its SQL holds the same writes, or the one under way (one state)" 0 \
    sh -c "n=\$(wc -l <'$work/sql-rows'); [ \$n -ge $((before - 1)) ] \
           && [ \$n -eq $got -o \$n -eq $((got - 1)) ] \
           && seq 1 \$n | cmp -s - '$work/sql-rows'"
check "the pending backup is removed once restored" 1 \
    sh -c "ls '$node' | grep -q pending"
stop_provend
provend --keyd "$ours" --restore-pending "$node/pending.bin"
same "a restart without it keeps the data" s3cret \
    "$bin/proven" kv get --app vault secret

# the enclave's way: the host asks the agent over the control channel
# (here the unix stand-in), the agent asks provend and streams the file
"$bin/proven-agent" --control "unix:$work/agent.sock" --ready "$work/ready" \
    --provend "$node/provend.sock" --restore "$work/handed.pbk" \
    >"$work/agent.log" 2>&1 &
echo $! >"$work/agent.pid"
for _ in $(seq 1 100); do [ -S "$work/agent.sock" ] && break; sleep 0.05; done
# the host changes the sealed master key on its disk under the running
# node: the backup carries the bytes that opened the key at start
cp "$node/keys/master.sealed" "$work/sealed.r3"
perl -e 'local $/; $_ = <STDIN>; substr($_, 20, 1) ^= "\x01"; print' \
    <"$node/keys/master.sealed" >"$work/sealed.changed"
cp "$work/sealed.changed" "$node/keys/master.sealed"
check "proven-host backup: a running guest's backup over the control channel" 0 \
    -m '^backup: [0-9]+ bytes to ' \
    "$bin/proven-host" backup "unix:$work/agent.sock" "$work/host.bin"
check "the agent's copy inside is gone once sent" 1 \
    test -e "$node/backups/backup.pbk"
check "proven-host restore hands it to a guest not yet initialized" 0 \
    -m '^restore: [0-9]+ bytes handed in' \
    "$bin/proven-host" restore "unix:$work/agent.sock" "$work/host.bin"
check "byte for byte" 0 cmp "$work/host.bin" "$work/handed.pbk"
check "a second is refused" 1 -m 'handed in already' \
    "$bin/proven-host" restore "unix:$work/agent.sock" "$work/host.bin"
kill "$(cat "$work/agent.pid")"
stop_provend
cp "$work/sealed.r3" "$node/keys/master.sealed"

fresh "$work/r6"
node=$work/r6
export PROVEN_DATA=$node
provend --keyd "$ours" --restore-pending "$work/handed.pbk"
same "the backup that went through the host restores too (its sealed key the one that opened, not the one the host put on the disk)" s3cret \
    "$bin/proven" kv get --app vault secret
# r6 is now a clone of r3 (both from the newest backup): the first to
# back up goes on, the other's data no longer follows the newest
check "the clone backs up first: its data follows the newest backup" 0 \
    -m '"paused_ms"' "$bin/proven" backup "$work/clone.bin"
stop_provend
node=$work/r3
export PROVEN_DATA=$node
provend --keyd "$ours"
check "the node it was cloned from is then refused (a fork)" 1 \
    -m 'does not follow the newest backup.*a fork' \
    "$bin/proven" backup "$work/fork.bin"
check "and keeps that backup where it is (keyd may have it)" 0 \
    test -s "$node/backups/backup.pbk"
stop_provend

# the host keeps every backup: it hands in an older one, to roll the
# node's data back.  keyd releases the key for the newest only.
fresh "$work/r7"
cp "$work/live.bin" "$work/r7/pending.bin"
node=$work/r7
export PROVEN_DATA=$node
refused "an older backup handed in: refused (a rollback), nothing written" \
    'not the newest backup of key "master"' \
    --keyd "$ours" --restore-pending "$node/pending.bin"
check "and nothing of it is written" 1 test -e "$node/storage"
check "a refusal that asking again cannot change: asked once" 1 \
    grep -q 'asking again' "$work/provend.log"
logged "keyd says why" 'refused a restore: not the newest backup' \
    "$work/keyd.log"
# ... and a relay puts the newest backup's id in the request in place of
# the older one's: the id is bound in the document
newest=$(od -An -tx1 -j8 -N16 "$work/clone.bin" | tr -d ' \n')
node "$top/tests/keyd/mitm.mjs" swap "$work/mitm.sock" "$work/keyd.sock" \
    "$newest" &
mitm_pid=$!
for _ in $(seq 1 100); do [ -S "$work/mitm.sock" ] && break; sleep 0.05; done
refused "a relay that swaps in the newest backup's id gets nothing" \
    'not this keyd request' \
    --keyd "unix:$work/mitm.sock" --restore-pending "$node/pending.bin"
kill "$mitm_pid"; wait "$mitm_pid" 2>/dev/null; rm -f "$work/mitm.sock"

fresh "$work/r4"
size=$(stat -c %s "$work/clone.bin")
perl -e 'local $/; $_ = <STDIN>; substr($_, $ARGV[0], 1) ^= "\x01"; print' \
    $((size - 40)) <"$work/clone.bin" >"$work/r4/pending.bin"
node=$work/r4
export PROVEN_DATA=$node
refused "the newest, changed on the way: it stops the start" \
    'restore: .*does not open: the backup was changed' \
    --keyd "$ours" --restore-pending "$node/pending.bin"
check "and nothing of it is written" 1 test -e "$node/storage"
refused "so does one without --keyd" 'restores only with --keyd' \
    --restore-pending "$node/pending.bin"

node=$work/r5
export PROVEN_DATA=$node
provend
check "a node without keyd makes no backup (nothing would seal it)" 1 \
    -m 'backup_unavailable.*no --keyd' "$bin/proven" backup "$work/nokeyd.bin"
stop_provend
node=$work/node
export PROVEN_DATA=$node

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
