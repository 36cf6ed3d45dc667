#!/bin/sh
# Builds libproven and the libFuzzer targets with clang, then runs each
# target for FUZZ_SECONDS (default 60) on a copy of its seed corpus.
# Usage: fuzz/run.sh [BUILD_DIR]   (objects go to BUILD_DIR-fuzz)
set -eu

cd "$(dirname "$0")/.."

build="${1:-build}-fuzz"
seconds="${FUZZ_SECONDS:-60}"
cc="${FUZZ_CC:-clang}"
san="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
cflags="-std=gnu11 -Wall -Wextra -Werror -O1 -g -fno-omit-frame-pointer \
    -D_GNU_SOURCE -Ilib"
libs="-lcbor -ljansson -lcrypto"

command -v "$cc" >/dev/null || { echo "fuzz: $cc not found" >&2; exit 1; }

mkdir -p "$build/obj"

objs=""
for src in lib/*.c; do
    obj="$build/obj/$(basename "$src" .c).o"
    # fuzzer-no-link: instrument the library without a second main()
    $cc $cflags -fsanitize=fuzzer-no-link,address,undefined \
        -fno-sanitize-recover=undefined -c "$src" -o "$obj"
    objs="$objs $obj"
done

# The daemon's own parsers: scopes, NSM responses, cron, schedules.
daemon_objs=""
for src in daemon/storage/storage.c daemon/attest/provider_nsm.c \
    daemon/core/log.c daemon/apps/schedule.c; do
    obj="$build/obj/daemon_$(basename "$src" .c).o"
    $cc $cflags -Idaemon -fsanitize=fuzzer-no-link,address,undefined \
        -fno-sanitize-recover=undefined -c "$src" -o "$obj"
    daemon_objs="$daemon_objs $obj"
done

status=0

for target in attestation frame daemon; do
    bin="$build/fuzz_$target"
    extra=""
    [ "$target" = daemon ] && extra="-Idaemon $daemon_objs -luv -lpthread"
    $cc $cflags $san "fuzz/fuzz_$target.c" $objs $extra $libs -o "$bin"

    corpus="$build/corpus/$target"
    rm -rf "$corpus"
    mkdir -p "$corpus" "$build/artifacts/$target"
    cp fuzz/corpus/"$target"/* "$corpus"/

    echo "fuzz: $target for ${seconds}s"
    if ! "$bin" -max_total_time="$seconds" -max_len=65536 -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$build/artifacts/$target/" "$corpus" \
        > "$build/fuzz_$target.log" 2>&1
    then
        echo "fuzz: $target FAILED, see $build/fuzz_$target.log" >&2
        tail -40 "$build/fuzz_$target.log" >&2
        status=1
    else
        grep -E '^stat::number_of_executed_units' \
            "$build/fuzz_$target.log" || true
    fi
done

exit $status
