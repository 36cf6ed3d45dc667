#!/bin/bash
# proven-agent (agent/proven-agent.c): the control channel over the unix
# stand-in for vsock, in tests/agent/agent.test.mjs.  Usage: tests/agent.sh BUILD_DIR
set -u
build=$(cd "${1:-build}" && pwd)
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$top/tests/agent" && PROVEN_AGENT=$build/bin/proven-agent \
    PROVEN_WORK=$work node --test --test-reporter=spec agent.test.mjs
