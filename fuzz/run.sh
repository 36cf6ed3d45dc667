#!/bin/sh
# Builds libproven, provend's objects and the libFuzzer targets with clang,
# then runs each target for FUZZ_SECONDS (default 60) on a copy of its seed
# corpus.  FUZZ_TARGETS picks some (default: all).
# Usage: fuzz/run.sh [BUILD_DIR]   (objects go to BUILD_DIR-fuzz)
set -eu

cd "$(dirname "$0")/.."

build="${1:-build}-fuzz"
seconds="${FUZZ_SECONDS:-60}"
cc="${FUZZ_CC:-clang}"
san="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
nolink="-fsanitize=fuzzer-no-link,address,undefined \
    -fno-sanitize-recover=undefined"
cflags="-std=gnu11 -Wall -Wextra -Werror -O1 -g -fno-omit-frame-pointer \
    -D_GNU_SOURCE -Ilib -Idaemon"
libs="-lcbor -ljansson -lcrypto -lz -lcurl"   # lib/fetch, lib/image
daemon_libs="-lsqlite3 -luv -lcurl -lnats -lpthread"

# targets of libproven alone, and those of provend's decoders
lib_targets="attestation frame frame_reader ws multipart eif"
daemon_targets="daemon cluster_log kv_log vfs eth"
targets="${FUZZ_TARGETS:-$lib_targets $daemon_targets}"

command -v "$cc" >/dev/null || { echo "fuzz: $cc not found" >&2; exit 1; }

mkdir -p "$build/obj"

# fuzzer-no-link: instrumented without a second main()
objs=""
for src in lib/*.c lib/fetch/*.c lib/image/*.c lib/net/*.c; do
    obj="$build/obj/$(basename "$src" .c).o"
    if [ ! -e "$obj" ] || [ "$src" -nt "$obj" ] || [ lib/proven.h -nt "$obj" ]
    then
        $cc $cflags $nolink -c "$src" -o "$obj"
    fi
    objs="$objs $obj"
done

daemon_objs=""
for src in daemon/*/*.c; do
    [ "$src" = daemon/core/main.c ] && continue
    obj="$build/obj/daemon_$(echo "$src" | sed 's|^daemon/||; s|/|_|g; s|\.c$||').o"
    $cc $cflags $nolink -c "$src" -o "$obj"
    daemon_objs="$daemon_objs $obj"
done

status=0

for target in $targets; do
    bin="$build/fuzz_$target"
    case " $daemon_targets " in
        *" $target "*) extra="$daemon_objs $daemon_libs" ;;
        *) extra="" ;;
    esac
    $cc $cflags $san "fuzz/fuzz_$target.c" $objs $extra $libs -o "$bin"

    corpus="$build/corpus/$target"
    rm -rf "$corpus"
    mkdir -p "$corpus" "$build/artifacts/$target"
    cp fuzz/corpus/"$target"/* "$corpus"/ 2>/dev/null || true

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
