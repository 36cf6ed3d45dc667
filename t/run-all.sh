#!/bin/bash
# Every test: cmocka unit tests, the command line and end-to-end scripts,
# then the Test::Nginx suites.  Usage: t/run-all.sh BUILD_DIR
set -u
build=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
failed=()

# Sanitizer builds load instrumented modules into Debian's nginx: a wrapper
# preloads the sanitizer runtimes for it (NGINX_PRELOAD, from `make asan`).
if [ -n "${NGINX_PRELOAD:-}" ]; then
    wrapper=$top/$build/nginx-preload
    cat > "$wrapper" <<SH
#!/bin/sh
ASAN_OPTIONS=\${ASAN_OPTIONS:-detect_leaks=0:detect_odr_violation=0} LD_PRELOAD="$NGINX_PRELOAD" exec /usr/sbin/nginx "\$@"
SH
    chmod +x "$wrapper"
    export TEST_NGINX_BINARY=$wrapper PROVEN_NGINX=$wrapper
fi

for t in "$build"/tests/test_*; do
    [ -x "$t" ] || continue
    echo "== $t"
    "$t" || failed+=("$t")
done

for s in tests/cli.sh tests/e2e.sh tests/storage.sh tests/apps.sh tests/rpc.sh \
         tests/keyd.sh tests/cluster.sh tests/peers.sh tests/acme.sh tests/chains.sh tests/events.sh tests/nft.sh tests/governance.sh \
         tests/radix.sh \
         tests/relay.sh \
         tests/egress.sh \
         tests/agent.sh \
         tests/image.sh; do
    echo "== $s"
    "$s" "$build" || failed+=("$s")
done

echo "== runtime (node:test)"
(cd runtime && node --experimental-vm-modules --no-warnings \
    --test-reporter=dot --test test/*.test.mjs) || failed+=("runtime/")

echo "== Test::Nginx suites (t/)"
modules="$top/$build/modules/ngx_http_proven_core_module.so"
modules="$modules $top/$build/modules/ngx_http_proven_attestation_module.so"
modules="$modules $top/$build/modules/ngx_http_proven_app_module.so"
modules="$modules $top/$build/modules/ngx_http_proven_rpc_module.so"
export TEST_NGINX_LOAD_MODULES=$modules
export TEST_NGINX_BINARY=${TEST_NGINX_BINARY:-/usr/sbin/nginx}
export TEST_NGINX_SERVROOT=$top/t/servroot
export PROVEN_BUILD=$build
prove -I t/lib t/ t/lib/harness.t || failed+=("t/")

# prove's summary stays the last thing printed when all is well.
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
