#!/bin/bash
# End to end: `make run`'s script starts a node; curl and `proven` check it
# the way the README tells a user to; SIGTERM leaves nothing running.
# Usage: tests/e2e.sh BUILD_DIR
set -u
build=$(cd "${1:-build}" && pwd)
top=$(cd "$(dirname "$0")/.." && pwd)
proven=$build/bin/proven
work=$(mktemp -d)
export PROVEN_DATA=$work/var PROVEN_BUILD=$build PROVEN_PROVIDER=dev
export PROVEN_HTTP_PORT=${E2E_HTTP_PORT:-18080}
export PROVEN_HTTPS_PORT=${E2E_HTTPS_PORT:-18443}
http=http://127.0.0.1:$PROVEN_HTTP_PORT
https=https://127.0.0.1:$PROVEN_HTTPS_PORT
passed=0 failed=0

check() {   # check NAME EXPECTED_EXIT COMMAND...
    local name=$1 want=$2; shift 2
    "$@" >"$work/out" 2>&1
    local got=$?
    if [ "$got" = "$want" ]; then
        passed=$((passed + 1)); echo "ok - $name"
    else
        failed=$((failed + 1)); echo "not ok - $name (exit $got, want $want)"
        sed 's/^/#   /' "$work/out" | head -20
    fi
}

"$top/nginx-conf/run-local.sh" >"$work/run.log" 2>&1 &
run_pid=$!
for _ in $(seq 1 250); do
    curl -s -o /dev/null "$http/" && break
    sleep 0.04
done
root=$PROVEN_DATA/attestation/dev-root.pem

check "make run serves /attestation" 0 \
    sh -c "curl -sf '$http/attestation?nonce=00ff' -o '$work/doc.cbor'"
check "the document verifies with the dev root and nonce" 0 \
    sh -c "curl -s '$http/attestation?nonce=00ff' | '$proven' verify --root '$root' --nonce 00ff -"
check "the dev document fails against the AWS root" 1 \
    sh -c "curl -s '$http/attestation?nonce=00ff' | '$proven' verify --nonce 00ff -"
check "a different nonce fails" 1 \
    sh -c "curl -s '$http/attestation?nonce=00ff' | '$proven' verify --root '$root' --nonce 00fe -"
check "proven attest fetches and verifies over HTTPS, bound to its TLS key" 0 \
    sh -c "'$proven' attest '$https/attestation' --insecure --root '$root' \
           | grep -q 'bound to the served TLS key'"
check "and says the document is the dev provider's, not an enclave's" 0 \
    sh -c "'$proven' attest '$https/attestation' --insecure --root '$root' \
           | grep -q '^DEV: made by a local node'"
# a relay that ends TLS itself (its own certificate) and asks the node's
# bound endpoint: a genuine document, but not for the TLS the client got
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj /CN=relay -days 1 -keyout "$work/relay.key" -out "$work/relay.crt" \
    >/dev/null 2>&1
node -e '
    const [key, cert, up, portFile] = process.argv.slice(1);
    const https = require("https"), fs = require("fs");
    https.createServer({ key: fs.readFileSync(key),
                         cert: fs.readFileSync(cert) }, (q, r) => {
        https.get(up + q.url, { rejectUnauthorized: false }, (u) => {
            r.writeHead(u.statusCode, u.headers);
            u.pipe(r);
        });
    }).listen(0, "127.0.0.1", function () {
        fs.writeFileSync(portFile, String(this.address().port));
    });' "$work/relay.key" "$work/relay.crt" "$https" "$work/relay.port" &
relay_pid=$!
for _ in $(seq 1 100); do [ -s "$work/relay.port" ] && break; sleep 0.05; done
check "proven attest refuses a document behind a TLS-ending relay" 0 \
    sh -c "out=\$('$proven' attest \
               https://127.0.0.1:\$(cat '$work/relay.port')/attestation \
               --insecure --root '$root' 2>&1); [ \$? = 1 ] \
           && echo \"\$out\" | grep -q 'TLS ends outside the node'"
kill "$relay_pid" 2>/dev/null
spki=$(openssl x509 -in "$PROVEN_DATA/tls/cert.pem" -pubkey -noout \
    | openssl pkey -pubin -outform DER | base64 -w0)
check "HTTPS binds the served certificate's key" 0 \
    sh -c "curl -sk '$https/attestation?nonce=01&format=json' | grep -qF '\"public_key\": \"$spki\"' \
        || curl -sk '$https/attestation?nonce=01&format=json' | grep -qF '\"public_key\":\"$spki\"'"
check "X-Attestation carries a document for the header's nonce" 0 \
    sh -c "curl -si -H 'X-Request-Attestation: 0a0b0c' '$http/' \
        | sed -n 's/^X-Attestation: //p' | tr -d '\r' | base64 -d \
        | '$proven' verify --root '$root' --nonce 0a0b0c -"
check "proven status talks to provend" 0 \
    sh -c "'$proven' status --socket '$PROVEN_DATA/provend.sock' | grep -q node_id"

kill -TERM "$run_pid"
wait "$run_pid"
check "SIGTERM stops the node with exit status 0" 0 test "$?" = 0
check "nothing is left listening" 0 \
    sh -c "! curl -s -o /dev/null '$http/'"
check "nothing is left running" 1 \
    sh -c "pgrep -f '[p]rovend --data $PROVEN_DATA' || pgrep -f '[n]ginx -p $PROVEN_DATA'"

echo "$passed passed, $failed failed"
rm -rf "$work"
[ "$failed" = 0 ]
