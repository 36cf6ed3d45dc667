#!/bin/bash
# proven-relay (lib/net): the inbound path over the unix stand-in for vsock,
# in tests/relay/relay.test.mjs.  Usage: tests/relay.sh BUILD_DIR
set -u
build=$(cd "${1:-build}" && pwd)
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$top/tests/relay" && PROVEN_RELAY=$build/bin/proven-relay \
    PROVEN_WORK=$work node --test --test-reporter=spec relay.test.mjs
