#!/bin/bash
# proven-egress (relay/proven-egress.c): the outbound path over the unix
# stand-in for vsock, in tests/egress/egress.test.mjs.  Usage: tests/egress.sh BUILD_DIR
set -u
build=$(cd "${1:-build}" && pwd)
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$top/tests/egress" && PROVEN_EGRESS=$build/bin/proven-egress \
    PROVEN_WORK=$work node --test --test-reporter=spec egress.test.mjs
