# Shared by the wrk benchmarks.  The caller sets $work and $seconds.

# "12.3us", "1.2ms", "2s" -> milliseconds.
to_ms() {
    awk -v s="$1" 'BEGIN {
        n = s + 0; u = s; sub(/^[0-9.]+/, "", u);
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000;
        printf "%.3f", n }'
}

# run_wrk THREADS CONNECTIONS URL [wrk options...]: sets rps, p50, p99 (ms)
# and errors (wrk's non-2xx and socket error lines, empty when none).
run_wrk() {
    local threads=$1 conns=$2 target=$3
    shift 3
    wrk -t"$threads" -c"$conns" -d"${seconds}s" --latency "$@" "$target" \
        >"$work/wrk.txt"
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$work/wrk.txt")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$work/wrk.txt")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$work/wrk.txt")")
    errors=$(awk '/Non-2xx|Socket errors/' "$work/wrk.txt")
}
