#!/bin/bash
# provend's own certificate from an ACME CA (daemon/tls), served by nginx
# (ngx_http_proven_tls_module): pebble, Debian's RFC 8555 test server, on
# loopback (pebble-challtestsrv answering every name with 127.0.0.1),
# validates TLS-ALPN-01 against nginx, which serves the challenge
# certificate provend publishes to acme-tls/1 ClientHellos only.  The
# certificate is issued, chains to pebble's root, names the domain and
# the live key, and nginx serves it; a renewal is served with no reload;
# its keys are on disk only sealed; a restart reuses it; what the host
# may try is refused; bad options and an ACME server that is down are
# said clearly.
# Usage: tests/acme.sh BUILD_DIR   (KEEP_WORK=1 keeps the logs)
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
acme=$base dns=$((base + 1)) mgmt=$((base + 2)) challenge=$((base + 3))
chall_mgmt=$((base + 4))
domain=node.test
data=$work/data
live=$work/live

spawn() {   # spawn NAME CMD...
    local name=$1; shift
    "$@" >>"$work/$name.log" 2>&1 &
    pids+=($!)
}

call() { node "$top/tests/call.mjs" "unix:$data/provend.sock" "$@"; }

# on a failure: what provend and pebble said last
on_fail() {
    call tls.status 2>&1 | cut -c1-400
    tail -5 "$work/provend.log" 2>/dev/null | cut -c1-300
    tail -5 "$work/pebble.log" 2>/dev/null | cut -c1-300
    tail -3 "$work/nginx-error.log" 2>/dev/null | cut -c1-300
}

# tls_status [DATA]: "state orders [error]" of provend's tls.status
tls_status() {
    node "$top/tests/call.mjs" "unix:${1:-$data}/provend.sock" tls.status \
        | node -e '
        let s = ""; process.stdin.on("data", (d) => s += d);
        process.stdin.on("end", () => {
            const r = JSON.parse(s).result || {};
            console.log([r.state, r.orders, r.last_error ? "error" : ""]
                        .join(" ").trim());
        });'
}

start_provend() {   # start_provend [ARGS...]
    spawn provend "$build/bin/provend" --data "$data" --provider dev \
        --acme-directory "https://127.0.0.1:$acme/dir" --acme-domain "$domain" \
        --acme-contact mailto:ops@node.test --acme-ca "$work/pebble.pem" \
        --tls-live "$live" "$@"
    provend_pid=$!
    for _ in $(seq 1 200); do
        [ -S "$data/provend.sock" ] && call tls.status >/dev/null 2>&1 && return
        sleep 0.05
    done
}

stop_provend() {
    kill -TERM "$provend_pid"
    wait "$provend_pid" 2>/dev/null
    rm -f "$data/provend.sock"
}

# the live certificate's serial
leaf() {
    openssl x509 -in "$live/$domain.pem" -noout -serial | cut -d= -f2
}

# pebble's HTTPS certificate, its config, the DNS stand-in
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$work/pebble.key" -out "$work/pebble.pem" -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null
cat >"$work/pebble.json" <<JSON
{"pebble": {"listenAddress": "127.0.0.1:$acme",
            "managementListenAddress": "127.0.0.1:$mgmt",
            "certificate": "$work/pebble.pem", "privateKey": "$work/pebble.key",
            "httpPort": 1, "tlsPort": $challenge, "ocspResponderURL": "",
            "externalAccountBindingRequired": false}}
JSON
spawn challtestsrv pebble-challtestsrv -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
    -dns01 "127.0.0.1:$dns" -http01 "" -https01 "" -tlsalpn01 "" \
    -management "127.0.0.1:$chall_mgmt"
start_pebble() {
    # one good nonce in ten refused: badNonce is retried (RFC 8555 6.5)
    PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=10 PEBBLE_AUTHZREUSE=0 \
        spawn pebble pebble -config "$work/pebble.json" \
        -dnsserver "127.0.0.1:$dns"
    pebble_pid=$!
    for _ in $(seq 1 100); do
        curl -sf --cacert "$work/pebble.pem" "https://127.0.0.1:$acme/dir" \
            >/dev/null && break
        sleep 0.1
    done
}
start_pebble
# nginx, its fallback certificate served until provend has one
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$work/fallback.key" -out "$work/fallback.pem" -days 2 \
    -subj /CN=fallback 2>/dev/null
# nginx_conf NAME DATA LIVE ADDR [DOMAIN]: a node's nginx, $work/NAME.conf
nginx_conf() {
    mkdir -p "$work/$1/logs" "$3"
    cat >"$work/$1.conf" <<CONF
load_module $build/modules/ngx_http_proven_core_module.so;
load_module $build/modules/ngx_http_proven_attestation_module.so;
daemon off;
master_process off;
error_log $work/$1-error.log info;
pid $work/$1.pid;
events { worker_connections 64; }
http {
    access_log off;
    ssl_protocols TLSv1.2 TLSv1.3;      # 1.22's default lacks 1.3
    proven_daemon unix:$2/provend.sock timeout=5s;
    server {
        listen $4:$challenge ssl;
        server_name $domain;
        ssl_certificate $work/fallback.pem;
        ssl_certificate_key $work/fallback.key;
        proven_tls_domain ${5:-$domain};
        proven_tls_live $3;
        location / { return 200 "served\n"; }
        location = /attestation {
            proven_attestation;
            proven_attestation_bind_tls on;
        }
    }
}
CONF
    spawn "$1" "${PROVEN_NGINX:-/usr/sbin/nginx}" -p "$work/$1" \
        -c "$work/$1.conf"
}
nginx_conf nginx "$data" "$live" 127.0.0.1
nginx_pid=$!

# served NAME [ALPN]: the serial of what nginx serves to a ClientHello for
# NAME (offering ALPN; TLS 1.2 with TLS12=1), and the protocol it chose:
# "serial=... ALPN", or "handshake failed"
served() {
    local out serial
    out=$(openssl s_client -connect "${AT:-127.0.0.1}:$challenge" -servername "$1" \
          ${2:+-alpn "$2"} ${TLS12:+-tls1_2} </dev/null 2>/dev/null)
    serial=$(echo "$out" | openssl x509 -noout -serial 2>/dev/null)
    [ -n "$serial" ] || { echo "handshake failed"; return; }
    echo "$serial $(echo "$out" | sed -n 's/^ALPN protocol: //p')"
}

fallback_serial=$(openssl x509 -in "$work/fallback.pem" -noout -serial)
# (pebble's challenge connects here: a listener that failed to start would
# otherwise show only as an order refused a minute later)
eventually "nginx serves its fallback certificate before provend has one" \
    "$fallback_serial " served "$domain"

# ---- bad options ----------------------------------------------------------------

check "a domain that is not a DNS name is refused at start" 1 \
    -m 'acme-domain Bad_Name: a DNS name, lower case' \
    "$build/bin/provend" --data "$work/bad" --provider dev \
    --acme-directory "https://127.0.0.1:$acme/dir" --acme-domain Bad_Name
check "a directory that is not https is refused at start" 1 \
    -m 'acme-directory http://127.0.0.1/dir: an https URL' \
    "$build/bin/provend" --data "$work/bad" --provider dev \
    --acme-directory http://127.0.0.1/dir --acme-domain "$domain"
check "a directory without a domain is refused at start" 1 \
    -m 'acme-directory and --acme-domain go together' \
    "$build/bin/provend" --data "$work/bad" --provider dev \
    --acme-directory "https://127.0.0.1:$acme/dir"
check "enclave keys: the live pair must be in the enclave's memory, not DATA" 1 \
    -m 'tls-live must name a directory of the enclave.s memory' \
    "$build/bin/provend" --data "$work/bad" --provider dev --master-key enclave \
    --acme-directory "https://127.0.0.1:$acme/dir" --acme-domain "$domain"

# nginx_conf_check SERVER_LINES...: nginx -t of a server holding them
nginx_conf_check() {
    printf 'load_module %s;\nerror_log %s/t.log;\npid %s/t.pid;\nevents {}\nhttp { server { %s } }\n' \
        "$build/modules/ngx_http_proven_core_module.so" "$work" "$work" "$*" \
        >"$work/t.conf"
    "${PROVEN_NGINX:-/usr/sbin/nginx}" -t -p "$work/nginx" -c "$work/t.conf"
}
check "nginx: proven_tls_domain without proven_tls_live is refused" 1 \
    -m 'proven_tls_domain and proven_tls_live go together' \
    nginx_conf_check "listen 127.0.0.1:1 ssl; ssl_certificate $work/fallback.pem;" \
    "ssl_certificate_key $work/fallback.key; proven_tls_domain $domain;"
check "nginx: a domain not in lower case is refused" 1 \
    -m 'proven_tls_domain "Node.Test" is not a DNS name in lower case' \
    nginx_conf_check "listen 127.0.0.1:1 ssl; ssl_certificate $work/fallback.pem;" \
    "ssl_certificate_key $work/fallback.key; proven_tls_domain Node.Test;" \
    "proven_tls_live $live;"
check "nginx: a server without TLS is refused" 1 \
    -m 'proven_tls_domain needs TLS on this server' \
    nginx_conf_check "listen 127.0.0.1:1; proven_tls_domain $domain;" \
    "proven_tls_live $live;"
# the name from a file (an enclave's agent writes it from initialize)
check "nginx: proven_tls_domain @FILE with no FILE: ssl_certificate alone" 0 \
    -m 'proven_tls_domain: .*/no.domain is not there: ssl_certificate is served' \
    nginx_conf_check "listen 127.0.0.1:1 ssl; ssl_certificate $work/fallback.pem;" \
    "ssl_certificate_key $work/fallback.key;" \
    "proven_tls_domain @$work/no.domain; proven_tls_live $live;"
printf 'node.test\nother.test\n' >"$work/two.domain"
check "nginx: a FILE of two names is refused" 1 \
    -m 'is not a DNS name in lower case' \
    nginx_conf_check "listen 127.0.0.1:1 ssl; ssl_certificate $work/fallback.pem;" \
    "ssl_certificate_key $work/fallback.key;" \
    "proven_tls_domain @$work/two.domain; proven_tls_live $live;"
check "provend: --acme-domain @FILE of two names is refused" 2 \
    -m 'one name, at most 253 characters' \
    "$build/bin/provend" --data "$work/bad" --provider dev \
    --acme-directory "https://127.0.0.1:$acme/dir" \
    --acme-domain "@$work/two.domain"
check "nginx: a fallback certificate with variables is refused" 1 \
    -m 'ssl_certificate may not hold variables here' \
    nginx_conf_check "listen 127.0.0.1:1 ssl; ssl_certificate \$ssl_server_name.pem;" \
    "ssl_certificate_key \$ssl_server_name.key; proven_tls_domain $domain;" \
    "proven_tls_live $live;"

# ---- issued ------------------------------------------------------------------------

start_provend
# (a failed order is tried again a minute later, as provend does: waited
# for, and said; a CI run once saw a first order fail)
tls_state() { tls_status | cut -d' ' -f1; }
EVENTUALLY_S=150 eventually \
    "provend orders a certificate and gets it (TLS-ALPN-01)" valid tls_state
if grep -q "no certificate for" "$work/provend.log"; then
    echo "# an order failed first: $(grep -m1 'no certificate for' "$work/provend.log" | cut -c1-300)"
fi
curl -sf --cacert "$work/pebble.pem" "https://127.0.0.1:$mgmt/roots/0" \
    >"$work/root.pem"
awk 'n > 0 || /END CERTIFICATE/ { if (n > 0) print } /END CERTIFICATE/ { n++ }' \
    "$live/$domain.pem" >"$work/intermediates.pem"
check "the chain verifies against pebble's root" 0 -m ': OK' \
    openssl verify -CAfile "$work/root.pem" -untrusted "$work/intermediates.pem" \
    "$live/$domain.pem"
check "it names the domain" 0 -m "DNS:$domain" \
    openssl x509 -in "$live/$domain.pem" -noout -ext subjectAltName
check "and its key is the live key" 0 sh -c "
    test \"\$(openssl x509 -in '$live/$domain.pem' -noout -pubkey)\" \
       = \"\$(openssl pkey -in '$live/$domain.pem' -pubout)\""
check "the live pair is readable by its owner only" 0 -m '^600$' \
    stat -c %a "$live/$domain.pem"
# (DATA/attestation is the dev provider's own PKI, local mode only)
check "no key in clear under DATA, nor the chain: only sealed files" 1 \
    grep -rlE --exclude-dir=attestation 'PRIVATE KEY|BEGIN CERTIFICATE' "$data"
check "the challenge certificate is withdrawn once decided" 0 \
    test -d "$live/challenge" -a -z "$(ls -A "$live/challenge")"
serial=$(leaf)
check "nginx serves it: the chain verifies for the name, over HTTPS" 0 \
    -m '^served$' curl -sf --resolve "$domain:$challenge:127.0.0.1" \
    --cacert "$work/root.pem" "https://$domain:$challenge/"
same "the certificate nginx serves is the live one" "serial=$serial " \
    served "$domain"
check "its attestation binds that certificate's key (proven attest)" 0 \
    -m 'bound to the served TLS key' "$build/bin/proven" attest \
    "https://127.0.0.1:$challenge/attestation" --insecure \
    --root "$data/attestation/dev-root.pem"
check "(nginx read the pair provend wrote)" 0 \
    grep -q "proven tls: serving $live/$domain.pem" "$work/nginx-error.log"

# a challenge published (as provend does while one is pending): only an
# acme-tls/1 ClientHello for the name sees it, under TLS 1.3 and 1.2
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$work/standin.key" -out "$work/standin.pem" -days 2 \
    -subj /CN=standin 2>/dev/null
cat "$work/standin.key" "$work/standin.pem" >"$live/challenge/$domain.pem"
standin=$(openssl x509 -in "$work/standin.pem" -noout -serial)
for TLS12 in "" 1; do
    v=${TLS12:+" (TLS 1.2)"}
    same "acme-tls/1 for the name: the challenge certificate, acme-tls/1$v" \
        "$standin acme-tls/1" served "$domain" acme-tls/1
    same "a ClientHello with http/1.1 never sees it$v" "serial=$serial http/1.1" \
        served "$domain" http/1.1
    same "nor one without ALPN$v" "serial=$serial " served "$domain"
    same "nor one offering h2 and acme-tls/1 ... it gets acme-tls/1 only$v" \
        "$standin acme-tls/1" served "$domain" h2,acme-tls/1
    same "acme-tls/1 for another name: refused$v" "handshake failed" \
        served other.test acme-tls/1
done
unset TLS12
rm "$live/challenge/$domain.pem"
same "acme-tls/1 with no challenge pending: refused" "handshake failed" \
    served "$domain" acme-tls/1
check "(said, without the client's name)" 0 grep -q \
    "an acme-tls/1 ClientHello with no challenge pending for its name" \
    "$work/nginx-error.log"

# ---- kept across a restart; renewed on demand ---------------------------------

stop_provend
rm -f "$live/$domain.pem"
start_provend
same "a restart reuses the certificate kept: no new order" "valid 0" tls_status
same "and makes it live again" "$serial" leaf
# (the host keeps the sealed files of the certificate before the renewal)
cp "$data/tls/acme/$domain.key.sealed" "$work/old.key.sealed"
cp "$data/tls/acme/$domain.crt.sealed" "$work/old.crt.sealed"

# handshakes without pause meanwhile, each a new one verified by the CA
node "$top/tests/tls-load.mjs" "127.0.0.1:$challenge" "$domain" \
    "$work/root.pem" "$work/load.stop" >"$work/load.out" 2>&1 &
load_pid=$!
sleep 1
# and a client of the SDK, pinned to the attested key before the renewal
node "$top/tests/tls-repin.mjs" "https://127.0.0.1:$challenge" \
    "$data/attestation/dev-root.pem" "$work/repin.ready" "$work/repin.renewed" \
    >"$work/repin.out" 2>&1 &
repin_pid=$!
for _ in $(seq 1 100); do
    [ -e "$work/repin.ready" ] && break
    sleep 0.1
done
check "tls.renew orders now" 0 -m '"ok":true' call tls.renew
eventually "a renewed certificate" "valid 1" tls_status
check "the live pair is the new one" 1 test "$(leaf)" = "$serial"
sleep 1.5                           # nginx looks once a second
touch "$work/load.stop"
wait "$load_pid"
check "swapped under load (TLS 1.3 and 1.2): none failed, the new one only after" 0 \
    -m '^handshakes [1-9][0-9]+ failed 0 serials 2 switches 1$' cat "$work/load.out"
touch "$work/repin.renewed"
wait "$repin_pid"
same "the SDK's pinned client attests the renewed key and goes on; a key never attested gets nothing" \
    "before 200 after 200 relay tls-key-changed 0" cat "$work/repin.out"
same "nginx serves the renewed one, with no reload" "serial=$(leaf) " \
    served "$domain"
check "and its attestation binds the renewed key" 0 \
    -m 'bound to the served TLS key' "$build/bin/proven" attest \
    "https://127.0.0.1:$challenge/attestation" --insecure \
    --root "$data/attestation/dev-root.pem"
check "(the same nginx)" 0 kill -0 "$nginx_pid"

# ---- revoked, and replaced ----------------------------------------------------

# status of a serial (openssl's hex) as pebble keeps it
ca_status() {
    curl -sf --cacert "$work/pebble.pem" \
        "https://127.0.0.1:$mgmt/cert-status-by-serial/$1" | node -e '
        let s = ""; process.stdin.on("data", (d) => s += d);
        process.stdin.on("end", () => console.log(JSON.parse(s).Status));'
}
revocations() {
    call tls.status | node -e '
        let s = ""; process.stdin.on("data", (d) => s += d);
        process.stdin.on("end", () =>
            console.log(JSON.parse(s).result.revocations));'
}
revoked=$(leaf)
same "(pebble has it valid)" Valid ca_status "$revoked"
# the host rolls the sealed files back to the certificate before: it is
# still the live one that is revoked
cp "$work/old.key.sealed" "$data/tls/acme/$domain.key.sealed"
cp "$work/old.crt.sealed" "$data/tls/acme/$domain.crt.sealed"
check "tls.revoke with a reason not a subscriber's (cACompromise): refused" 0 \
    -m '"code":"bad_request".*reason' call tls.revoke '{"reason": 2}'
check "tls.revoke with a reason that is not a number: refused" 0 \
    -m '"code":"bad_request".*reason' call tls.revoke '{"reason": "old"}'
check "tls.revoke (superseded) starts" 0 -m '"ok":true' \
    call tls.revoke '{"reason": 4}'
check "a second while it is under way: conflict" 0 \
    -m '"code":"conflict"' call tls.revoke
eventually "the certificate revoked and a new one ordered" "valid 2" tls_status
same "(one revocation)" 1 revocations
same "the CA has the live certificate revoked" Revoked ca_status "$revoked"
same "not the one the host rolled the disk back to" Valid ca_status "$serial"
check "the live pair is a new one" 1 test "$(leaf)" = "$revoked"
same "which the CA has valid" Valid ca_status "$(leaf)"
sleep 1.1
same "nginx serves the new one" "serial=$(leaf) " served "$domain"

# ---- what the host may try -----------------------------------------------------

# answers for the ACME server itself (its HTTPS not of the CA provend trusts)
check "an ACME server whose certificate is not of --acme-ca is not believed" 0 \
    -m '"domain":"node.test".*last_error.*(SSL|certificate)' sh -c "
    '$build/bin/provend' --data '$work/mitm' --provider dev \
        --socket '$work/mitm.sock' --acme-directory 'https://127.0.0.1:$acme/dir' \
        --acme-domain '$domain' --acme-ca '$work/root.pem' \
        --tls-live '$work/mitm-live' >'$work/mitm.log' 2>&1 &
    p=\$!
    for _ in \$(seq 1 100); do
        node '$top/tests/call.mjs' 'unix:$work/mitm.sock' tls.status 2>/dev/null \
            | grep -q last_error && break
        sleep 0.1
    done
    node '$top/tests/call.mjs' 'unix:$work/mitm.sock' tls.status
    kill \$p"
check "and nothing was made live" 1 test -e "$work/mitm-live/$domain.pem"

# swaps the kept chain for another, or removes it, or changes the account
stop_provend
cp "$work/pebble.pem" "$data/tls/acme/$domain.crt.sealed"
start_provend
eventually "a kept chain swapped on disk is not used: a new order" \
    "valid 1" tls_status
check "(said)" 0 grep -q "the certificate kept for $domain is not usable: .*does not open" \
    "$work/provend.log"
stop_provend
rm "$data/tls/acme/$domain.crt.sealed"
printf 'X' | dd of="$data/tls/acme/account.sealed" bs=1 seek=40 \
    conv=notrunc status=none
start_provend
eventually "the kept chain removed, the account changed: a new account and order" \
    "valid 1" tls_status
check "(the account said)" 0 grep -q "account.sealed does not open .*: a new ACME account" \
    "$work/provend.log"

# holds the CA's answers back: an order waits; the node still stops at once
kill -STOP "$pebble_pid"
check "tls.renew starts an order" 0 -m '"ok":true' call tls.renew
check "a second while it is under way: conflict" 0 \
    -m '"code":"conflict".*an order is under way' call tls.renew
stopped_at=$SECONDS
stop_provend
check "provend stops at once, the order cancelled (not after its 30 s request)" 0 \
    test $((SECONDS - stopped_at)) -le 5
kill -CONT "$pebble_pid"
start_provend
same "and starts again with the certificate it had" "valid 0" tls_status

# ---- tampered, or the CA away -----------------------------------------------------

stop_provend
printf 'X' | dd of="$data/tls/acme/$domain.key.sealed" bs=1 seek=40 \
    conv=notrunc status=none
kill -TERM "$pebble_pid"            # the CA, away
wait "$pebble_pid" 2>/dev/null
start_provend
sleep 1
check "a sealed key changed on disk is not used: a new order, said" 0 \
    grep -q "does not open with this node's master key: ordering a new" \
    "$work/provend.log"
eventually "the CA away: the order fails, says why, and is tried later" \
    "none 1 error" tls_status
check "(the reason names the directory)" 0 -m 'last_error.*127.0.0.1' \
    call tls.status
check "tls.revoke with no certificate: conflict, said" 0 \
    -m '"code":"conflict".*no certificate to revoke' call tls.revoke
start_pebble                        # back, knowing no account: made again
check "with the CA back, tls.renew orders" 0 -m '"ok":true' call tls.renew
eventually "and gets one" "valid 2" tls_status

# ---- a second node of the cluster: its own certificate for the same name ----

# its operator points the name at it while it orders (pebble validates
# there); its key is made inside it and never leaves: no sharing of one
# (its name from a file, as an enclave's agent writes it from initialize)
data2=$work/data2
live2=$work/live2
echo "$domain" >"$work/tls.domain"
nginx_conf nginx2 "$data2" "$live2" 127.0.0.2 "@$work/tls.domain"
AT=127.0.0.2 eventually "the second node's nginx listens" \
    "$fallback_serial " served "$domain"
curl -sf -X POST -d "{\"host\": \"$domain.\", \"addresses\": [\"127.0.0.2\"]}" \
    "http://127.0.0.1:$chall_mgmt/add-a"
spawn provend2 "$build/bin/provend" --data "$data2" --provider dev \
    --acme-directory "https://127.0.0.1:$acme/dir" \
    --acme-domain "@$work/tls.domain" --acme-ca "$work/pebble.pem" \
    --tls-live "$live2"
eventually "a second node gets a certificate for the same name" "valid 1" \
    tls_status "$data2"
check "for the name" 0 -m "DNS:$domain" \
    openssl x509 -in "$live2/$domain.pem" -noout -ext subjectAltName
check "its own key: not the first node's" 1 test \
    "$(openssl pkey -in "$live2/$domain.pem" -pubout)" \
    = "$(openssl pkey -in "$live/$domain.pem" -pubout)"
same "the first node's certificate is still valid at the CA" Valid \
    ca_status "$(leaf)"
sleep 1.1
same "the first node's nginx serves its own" "serial=$(leaf) " served "$domain"
AT=127.0.0.2 same "the second node's nginx serves its own" \
    "$(openssl x509 -in "$live2/$domain.pem" -noout -serial) " served "$domain"

# no name given (the host's initialize named none): no order, the
# fallback served
spawn provend3 "$build/bin/provend" --data "$work/data3" --provider dev \
    --socket "$work/p3.sock" --acme-directory "https://127.0.0.1:$acme/dir" \
    --acme-domain "@$work/none.domain" --acme-ca "$work/pebble.pem" \
    --tls-live "$work/live3"
for _ in $(seq 1 100); do
    [ -S "$work/p3.sock" ] && break
    sleep 0.05
done
check "provend --acme-domain @FILE with no FILE: runs, orders nothing, says so" 0 \
    -m 'none.domain is not there: no ACME certificate' cat "$work/provend3.log"
check "(tls.status: no certificate kept, said)" 0 \
    -m '"code":"tls_unavailable".*no --acme-directory' \
    node "$top/tests/call.mjs" "unix:$work/p3.sock" tls.status

echo "# $passed passed, $failed failed"
[ "$failed" = 0 ]
