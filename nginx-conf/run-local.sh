#!/bin/bash
# Starts a local node in the foreground: provend with the dev attestation
# provider and nginx with our modules, both on 127.0.0.1.  Ctrl-C (SIGINT)
# or SIGTERM stops everything it started.
#
#   PROVEN_HTTP_PORT   (8080)    PROVEN_HTTPS_PORT (8443)
#   PROVEN_DATA        (./var)   PROVEN_BUILD      (./build)
#   PROVEN_PROVIDER    (auto: nsm when /dev/nsm exists, else dev)
#   PROVEN_NGINX       (/usr/sbin/nginx)
#   PROVEN_PROVEND_ARGS  more provend options (e.g. "--app-workers 2")
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
http_port=${PROVEN_HTTP_PORT:-8080}
https_port=${PROVEN_HTTPS_PORT:-8443}
data=${PROVEN_DATA:-$top/var}
build=${PROVEN_BUILD:-$top/build}
nginx=${PROVEN_NGINX:-/usr/sbin/nginx}
provider=${PROVEN_PROVIDER:-auto}

mkdir -p "$data/nginx" "$data/tls"
data=$(cd "$data" && pwd)
build=$(cd "$build" && pwd)
chmod 700 "$data"

if [ ! -s "$data/tls/cert.pem" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -days 365 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
        -keyout "$data/tls/key.pem" -out "$data/tls/cert.pem" 2>/dev/null
    chmod 600 "$data/tls/key.pem"
fi

user_line=
[ "$(id -u)" = 0 ] && user_line="user root;"
sed -e "s|@USER@|$user_line|" -e "s|@MODULES@|$build/modules|g" -e "s|@DATA@|$data|g" \
    -e "s|@TOP@|$top|g" \
    -e "s|@HTTP_PORT@|$http_port|g" -e "s|@HTTPS_PORT@|$https_port|g" \
    "$top/nginx-conf/local.conf" > "$data/nginx.conf"

provend_pid=
nginx_pid=
stop() {
    local code=${1:-0}
    trap - INT TERM EXIT
    # either may be gone already: that must not stop the clean-up (set -e)
    [ -z "$nginx_pid" ] || kill -QUIT "$nginx_pid" 2>/dev/null || true
    [ -z "$provend_pid" ] || kill -TERM "$provend_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    exit "$code"
}
trap stop INT TERM EXIT

# What the PCRs measure (README, "PCRs of the dev provider").
"$build/bin/provend" --data "$data" --provider "$provider" \
    --measure "1:$nginx" \
    --measure "1:$build/modules/ngx_http_proven_core_module.so" \
    --measure "1:$build/modules/ngx_http_proven_attestation_module.so" \
    --measure "1:$build/modules/ngx_http_proven_app_module.so" \
    --measure "1:$build/modules/ngx_http_proven_rpc_module.so" \
    --measure "3:$data/nginx.conf" ${PROVEN_PROVEND_ARGS:-} &
provend_pid=$!

for _ in $(seq 1 250); do
    [ -S "$data/provend.sock" ] && break
    kill -0 "$provend_pid" 2>/dev/null || { echo "provend failed" >&2; exit 1; }
    sleep 0.02
done

# examples/web pins what the node measures, as a real page embeds the PCRs
# of the build it trusts: here read over provend's own socket (a socket
# left by a killed provend answers nothing until this one replaces it)
for _ in $(seq 1 250); do
    PROVEN_DATA=$data "$build/bin/proven" status >"$data/status.json" \
        2>/dev/null && break
    sleep 0.02
done
node -e '
    const p = JSON.parse(require("fs").readFileSync(process.argv[1])).pcrs;
    console.log(JSON.stringify({ 0: p["0"], 1: p["1"], 2: p["2"] }));' \
    "$data/status.json" >"$data/attestation/pcrs.json" \
    || echo "run-local: no PCRs for examples/web" >&2

"$nginx" -p "$data/nginx" -c "$data/nginx.conf" &
nginx_pid=$!

cat <<MSG
Proven Node (local) is running:
  http://127.0.0.1:$http_port/attestation?nonce=00ff
  https://127.0.0.1:$https_port/attestation  (public_key = the TLS key)
  data in $data, dev root $data/attestation/dev-root.pem
Deploy an app and call it:
  PROVEN_DATA=$data $build/bin/proven app deploy $top/examples/hello --app hello
  curl -s http://127.0.0.1:$http_port/app/hello/count
Verify it:
  curl -s 'http://127.0.0.1:$http_port/attestation?nonce=00ff' | $build/bin/proven verify --root $data/attestation/dev-root.pem --nonce 00ff -
Ctrl-C stops the node.
MSG

# Whichever exits first takes the other down.
code=0
wait -n "$provend_pid" "$nginx_pid" || code=$?
echo "run-local: a process exited ($code); stopping the node" >&2
stop 1
