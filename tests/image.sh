#!/bin/bash
# The enclave image, end to end: `make image` twice gives the same bytes
# and `proven image pcrs` the same PCRs; the image boots under qemu (TCG)
# with proven-host, its HTTPS attestation verifies with exactly those PCRs
# and binds the TLS key served from inside; an app deployed into it runs;
# a byte changed in its nginx.conf changes PCR2 (and PCR0, not PCR1) and
# the old expected PCRs are refused; a service that cannot be kept up
# powers the guest off; Ctrl-C shuts it down cleanly.
# Usage: tests/image.sh BUILD_DIR
set -u
build=$(cd "${1:-build}" && pwd)
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/tests/lib.sh"
proven=$build/bin/proven
host=$build/bin/proven-host
work=$(mktemp -d)
port=$(port_block 3)
http=$port https=$((port + 1)) control=$((port + 2))
passed=0 failed=0
vm_pid= keyd_pid=

cleanup() {
    [ -z "$vm_pid" ] || kill -KILL "$vm_pid" 2>/dev/null
    [ -z "$keyd_pid" ] || kill "$keyd_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# pcr N FILE: PCR N of the Measurements JSON in FILE
pcr() { sed -n "s/.*\"PCR$1\": \"\\([0-9a-f]*\\)\".*/\\1/p" "$2"; }

# the PCRs as the SDK takes them
pcrs_json() {
    printf '{"0":"%s","1":"%s","2":"%s"}\n' "$(pcr 0 "$1")" "$(pcr 1 "$1")" \
        "$(pcr 2 "$1")"
}

# boot IMAGE LOG [PATH [ARGS...]]: proven-host in the background; waits
# until the node serves PATH (default: an attestation, provend's) or the
# guest is gone, and says how long it took
boot() {
    local start=$SECONDS image=$1 log=$2 path=${3:-attestation?nonce=00}
    shift 2; shift || true
    "$host" run --qemu "$image" --http "$http" --https "$https" \
        --control-port "$control" --log "$log.shipped" "$@" >"$log" 2>&1 &
    vm_pid=$!
    for _ in $(seq 1 1800); do
        curl -sf -o /dev/null -m 2 "http://127.0.0.1:$http/$path" && break
        kill -0 "$vm_pid" 2>/dev/null || break
        sleep 0.1
    done
    # nginx starts before provend, and a worker whose connect failed then
    # answers 503 for 500 ms before it tries again: past that, every one
    # reaches provend
    sleep 0.6
    booted=$((SECONDS - start))
}

# stop: Ctrl-C to proven-host; its exit status
stop() {
    kill -INT "$vm_pid" 2>/dev/null
    wait "$vm_pid"
    local rc=$?
    vm_pid=
    return $rc
}

# keyd_for_this_boot: keyd (again) with the root of the guest just booted
# (under qemu each boot makes a dev root of its own), until the guest's
# provend, which asks until keyd answers, serves
keyd_for_this_boot() {
    curl -sf "http://127.0.0.1:$http/dev-root.pem" -o "$work/root.pem"
    "$proven" keyd serve --dir "$work/keyd" --listen "unix:$work/keyd.sock" \
        --root "$work/root.pem" >>"$work/keyd.log" 2>&1 &
    keyd_pid=$!
    for _ in $(seq 1 600); do
        curl -sf -o /dev/null -m 2 \
            "http://127.0.0.1:$http/attestation?nonce=00" && break
        sleep 0.1
    done
}

attest() {   # attest PCRS_FILE: proven attest over HTTPS with those PCRs
    "$proven" attest "https://127.0.0.1:$https/attestation" --insecure \
        --root "$work/root.pem" --pcr 0="$(pcr 0 "$1")" \
        --pcr 1="$(pcr 1 "$1")" --pcr 2="$(pcr 2 "$1")"
}

# ---- build -------------------------------------------------------------------

start=$SECONDS
check "make image builds the image" 0 -m '"PCR2": "[0-9a-f]{96}"' \
    make -s -C "$top" --no-print-directory image
echo "# make image: $((SECONDS - start)) s; this tree's PCRs:" \
    $(grep -o '"PCR[0-2]": "[0-9a-f]*"' "$work/out" | tr -d '"' | sed 's/: /=/')
cp "$work/out" "$work/build-a.json"
image=$top/build/image/proven.eif
cp "$image" "$work/a.eif"

check "and builds it again" 0 make -s -C "$top" --no-print-directory image
check "the same bytes, twice" 0 cmp "$work/a.eif" "$image"
check "proven image pcrs prints the PCRs the build printed" 0 \
    diff <(grep PCR "$work/build-a.json") \
         <("$proven" image pcrs "$work/a.eif" | grep PCR)

# a byte of the enclave nginx.conf changed, and storage through keyd (its
# address and identity measured); init's services changed so that one can
# never stay up
sed 's/worker_connections 1024;/worker_connections 1025;/' \
    "$top/rootfs/nginx.conf" >"$work/nginx.conf"
"$proven" keyd identity --dir "$work/keyd" >"$work/keyd.hex"
check "PROVEN_IMAGE_ACME without keyd: refused, said why, before any work" 1 \
    -m 'PROVEN_IMAGE_ACME needs PROVEN_IMAGE_KEYD' \
    env PROVEN_IMAGE_ACME=https://acme.example/dir "$top/rootfs/build.sh" \
    "$work/x" "$top/build/image/build"
check "PROVEN_IMAGE_ACME not an https URL: refused" 1 \
    -m 'PROVEN_IMAGE_ACME: an https URL' \
    env PROVEN_IMAGE_ACME='http://acme.example/dir?x' PROVEN_IMAGE_KEYD=tcp:1.2.3.4:1 \
    "$top/rootfs/build.sh" "$work/x" "$top/build/image/build"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$work/acme-ca.key" -out "$work/acme-ca.pem" -days 2 \
    -subj /CN=acme-ca 2>/dev/null
PROVEN_IMAGE_NGINX_CONF=$work/nginx.conf PROVEN_IMAGE_KEYD=tcp:10.0.2.100:7000 \
    PROVEN_IMAGE_KEYD_IDENTITY=$work/keyd.hex \
    PROVEN_IMAGE_ACME=https://acme.example:14000/dir \
    PROVEN_IMAGE_ACME_CA=$work/acme-ca.pem "$top/rootfs/build.sh" \
    "$work/b" "$top/build/image/build" >"$work/build-b.json" 2>&1
check "an image with ACME: the agent writes initialize's name" 0 \
    grep -q '^agent .* --tls-domain /run/proven/tls.domain$' \
    "$work/b/app/etc/proven/services"
check "provend orders for it, through egress, trusting the image's CA" 0 \
    grep -q '^provend .* --acme-directory https://acme.example:14000/dir --acme-domain @/run/proven/tls.domain --acme-ca /etc/proven/acme-ca.pem --acme-proxy http://127.0.0.1:3128 --tls-live /run/proven/tls$' \
    "$work/b/app/etc/proven/services"
check "and egress may reach the CA, the image's list saying so" 0 \
    grep -qx 'acme.example:14000' "$work/b/app/etc/proven/egress.allow"
{ cat "$top/rootfs/services"
  echo "crasher always - /opt/proven/bin/proven no-such-command"; } \
    >"$work/services"
PROVEN_IMAGE_SERVICES=$work/services "$top/rootfs/build.sh" \
    "$work/c" "$top/build/image/build" >"$work/build-c.json" 2>&1
check "an image without ACME names no CA" 1 \
    grep -q 'acme' "$work/c/app/etc/proven/services" "$work/c/app/etc/proven/egress.allow"
for i in 0 2; do
    check "a changed nginx.conf changes PCR$i" 1 \
        test "$(pcr $i "$work/build-a.json")" = "$(pcr $i "$work/build-b.json")"
done
check "but not PCR1 (kernel, cmdline, init)" 0 \
    test "$(pcr 1 "$work/build-a.json")" = "$(pcr 1 "$work/build-b.json")"

# ---- bad input ------------------------------------------------------------------

# the host keeps the .deb cache and may answer for the mirror: the lock's
# hashes decide
first=$(grep -v '^#' "$top/rootfs/packages.lock" | head -1)
deb=$(basename "$(echo "$first" | cut -d' ' -f5)")
echo "$first" >"$work/one.lock"
mkdir -p "$work/debs"
echo "not the package" >"$work/debs/$deb"
check "a .deb changed in the cache is fetched again, not unpacked" 0 \
    env PROVEN_IMAGE_LOCK="$work/one.lock" "$top/rootfs/unpack.sh" \
    "$work/unpacked" "$work/debs"
check "(the cache now holds the pinned one)" 0 -m 'OK' sh -c \
    "echo '$(echo "$first" | cut -d' ' -f3)  $work/debs/$deb' | sha256sum -c"
echo "$first" | awk '{ $3 = "00" substr($3, 3); print }' >"$work/bad.lock"
rm -f "$work/debs/$deb"
check "a .deb that is not the one the lock pins is refused" 1 \
    -m 'is not the .deb the lock pins' \
    env PROVEN_IMAGE_LOCK="$work/bad.lock" "$top/rootfs/unpack.sh" \
    "$work/unpacked2" "$work/debs"
check "and nothing of it is kept" 1 test -e "$work/debs/$deb"

check "proven-host without an image is a usage error" 2 -m 'run --qemu' \
    "$host" run
check "proven-host refuses a bad port" 2 -m '--http wants a number' \
    "$host" run --qemu "$work/a.eif" --http 70000
check "proven-host: --node without --peer is a usage error" 2 \
    -m '--node NAME goes with one --peer or more' \
    "$host" run --qemu "$work/a.eif" --node n1
check "proven-host: a --peer not NAME,URL,HOST:PORT is a usage error" 2 \
    -m '--peer NAME,URL,HOST:PORT' \
    "$host" run --qemu "$work/a.eif" --node n1 --peer n2
cp "$work/a.eif" "$work/bad.eif"
printf 'X' | dd of="$work/bad.eif" bs=1 seek=9000000 conv=notrunc \
    status=none
check "proven-host refuses a changed image (its CRC)" 1 -m 'CRC' \
    "$host" run --qemu "$work/bad.eif"

# ---- boot the image ---------------------------------------------------------------

boot "$work/a.eif" "$work/vm-a.log"
echo "# from start to serving: $booted s (TCG)"
check "the guest boots and serves HTTP" 0 \
    curl -sf -o /dev/null "http://127.0.0.1:$http/"
check "proven-host printed the image's PCRs" 0 \
    diff <(grep PCR "$work/build-a.json") <(grep PCR "$work/vm-a.log")
check "init loaded the modules and started the services in order" 0 \
    grep -q 'init: up: 8 services' "$work/vm-a.log"
curl -sf "http://127.0.0.1:$http/dev-root.pem" -o "$work/root.pem"
# the host reads and rewrites plain HTTP: apps are not served over it
check "plain HTTP sends /app/ to HTTPS (308)" 0 -m '^308$' \
    curl -s -o /dev/null -w '%{http_code}\n' \
    "http://127.0.0.1:$http/app/hello/count"

check "its HTTPS attestation verifies with the PCRs of make image" 0 \
    -m 'bound to the served TLS key' attest "$work/build-a.json"
check "and is refused with another image's PCRs" 1 -m 'PCR0 mismatch' \
    attest "$work/build-b.json"

"$proven" app pack "$top/examples/hello" --out "$work/hello.pkg" >/dev/null
pcrs_json "$work/build-a.json" >"$work/pcrs-a.json"
check "examples/hello deployed into the guest over a session answers" 0 \
    -m '^42$' node "$top/tests/image/vm-client.mjs" \
    "https://127.0.0.1:$https" "$work/root.pem" "$work/pcrs-a.json" \
    "$work/hello.pkg"
check "an app worker started in its sandbox inside" 0 \
    grep -q 'serves on .* (1 worker)' "$work/vm-a.log"

# the control channel (proven-agent inside, over the forwarded port)
check "the control channel: initialized, its services running" 0 \
    -m 'initialized: yes.*service: in443 running.*service: inroute running.*service: egress running.*service: provend running' \
    sh -c "'$host' control tcp:127.0.0.1:$control status | tr '\n' ' '"
shipped=$work/vm-a.log.shipped
check "the guest's logs shipped over it (init's, and the services')" 0 \
    sh -c "grep -q '^log: agent: agent: initialized' '$shipped' \
           && grep -q '^log: init: up: 8 services' '$shipped' \
           && grep -q '^log: provend: .*listening on' '$shipped' \
           && grep -q '^log: nginx: ' '$shipped'"
check "the guest's egress proxy runs, its DoH server the one address it adds" 0 \
    grep -q "^log: egress: egress: enclave's side, listening on tcp:127.0.0.1:3128, 1 allowed" \
    "$shipped"

check "Ctrl-C shuts the guest down: proven-host exits 0" 0 stop
check "Ctrl-C went over the control channel, with its grace" 0 \
    grep -q 'asked the guest to shut down (control channel, 10 s grace)' \
    "$work/vm-a.log"
# line LOG TEXT: the number of the first line of LOG holding TEXT
line() { grep -nF -m1 "$2" "$1" | cut -d: -f1; }
check "services stopped in reverse order, then power off" 0 \
    test "$(line "$work/vm-a.log" 'init: stopping provend')" \
         -lt "$(line "$work/vm-a.log" 'init: stopping nginx')" \
    -a "$(line "$work/vm-a.log" 'init: stopping nginx')" \
         -lt "$(line "$work/vm-a.log" 'reboot: Power down')"

# ---- the changed image ------------------------------------------------------------

# the guest reaches keyd, and only keyd, through proven-host (--keyd); its
# provend asks until keyd answers, nginx already serving the dev root,
# which keyd is told to trust (under qemu documents are the dev provider's)
boot "$work/b/proven.eif" "$work/vm-b.log" dev-root.pem \
    --keyd "unix:$work/keyd.sock"
check "the changed image serves" 0 \
    curl -sf -o /dev/null "http://127.0.0.1:$http/"
printf '{"pcrs": {"0": "%s", "1": "%s", "2": "%s"}}\n' \
    "$(pcr 0 "$work/build-b.json")" "$(pcr 1 "$work/build-b.json")" \
    "$(pcr 2 "$work/build-b.json")" >"$work/keyd/policy.json"
keyd_for_this_boot
check "keyd releases the key to the image's PCRs" 0 \
    -m 'released key "master" \(made now\) to proven-dev-.*the policy.s PCRs' \
    cat "$work/keyd.log"
check "the guest's provend seals its master key with it" 0 \
    -m 'master key: released by keyd tcp:10.0.2.100:7000' cat "$work/vm-b.log"
check "the PCRs expected of the first image are refused" 1 \
    -m 'PCR0 mismatch' attest "$work/build-a.json"
check "its own PCRs verify" 0 -m '^valid' attest "$work/build-b.json"
pcrs_json "$work/build-b.json" >"$work/pcrs-b.json"
check "storage works: an app deployed into it answers" 0 \
    -m '^42$' node "$top/tests/image/vm-client.mjs" \
    "https://127.0.0.1:$https" "$work/root.pem" "$work/pcrs-b.json" \
    "$work/hello.pkg"
# a sealed backup of the running guest, over the control channel; the
# guest booted again from it has the app and its count
app=$(sed -n 's/^app //p' "$work/out")
curl -sk -X POST "https://127.0.0.1:$https/app/$app/count" >/dev/null
check "the app counts in the guest" 0 -m '"count":2' \
    curl -sk -X POST "https://127.0.0.1:$https/app/$app/count"
check "proven-host backup copies a sealed backup out of the running guest" 0 \
    -m '^backup: [0-9]+ bytes to ' \
    "$host" backup "tcp:127.0.0.1:$control" "$work/guest.pbk"
check "none of the guest's data is in it in clear (the app's code)" 1 \
    grep -qa 'Compare-and-set' "$work/guest.pbk"
check "and it shuts down" 0 stop
kill "$keyd_pid" 2>/dev/null
wait "$keyd_pid" 2>/dev/null
boot "$work/b/proven.eif" "$work/vm-b2.log" dev-root.pem \
    --keyd "unix:$work/keyd.sock" --restore "$work/guest.pbk"
keyd_for_this_boot
# (its worker starts on the first call, slowly under TCG: asked again
# while the answer is that it has not started yet)
check "booted again with --restore, the guest has the app and its count" 0 \
    -m '"count":2' sh -c "for i in 1 2 3 4 5 6; do
        curl -sk 'https://127.0.0.1:$https/app/$app/count' >'$work/count'
        grep -q worker_unavailable '$work/count' || break; sleep 2; done
        cat '$work/count'"
check "keyd gave the key for it: the newest backup" 0 \
    -m 'to restore the newest backup' cat "$work/keyd.log"
check "its provend restored the backup before it started" 0 \
    -m 'provend: .*restore: [0-9]+ files from /run/proven/restore.pbk' \
    cat "$work/vm-b2.log"
check "and it shuts down" 0 stop
kill "$keyd_pid" 2>/dev/null
wait "$keyd_pid" 2>/dev/null

# ---- a service that cannot be kept up ------------------------------------------------

"$host" run --qemu "$work/c/proven.eif" --http "$http" --https "$https" \
    >"$work/vm-c.log" 2>&1 &
vm_pid=$!
for _ in $(seq 1 1200); do
    kill -0 "$vm_pid" 2>/dev/null || break
    sleep 0.1
done
check "the guest powers itself off" 0 sh -c "! kill -0 $vm_pid 2>/dev/null"
check "after restarts with a growing backoff" 0 \
    grep -q 'crasher restarts in 400 ms' "$work/vm-c.log"
check "init says why" 0 -m 'crasher cannot be kept up' cat "$work/vm-c.log"
check "and stops the others first" 0 grep -q 'init: stopping provend' \
    "$work/vm-c.log"
wait "$vm_pid" 2>/dev/null
vm_pid=

echo "# image: $passed passed, $failed failed"
[ "$failed" = 0 ]
