# Shared by the shell suites: TAP-like lines and counts.  The caller sets
# $work (a scratch directory) and passed=0 failed=0 before using these.

pass() { passed=$((passed + 1)); echo "ok - $1"; }
fail() {   # fail NAME WHY [FILE]
    failed=$((failed + 1)); echo "not ok - $1 ($2)"
    [ -n "${3:-}" ] && sed 's/^/#   /' "$3" | head -20
    # a suite's own diagnosis (the logs behind a flake CI keeps no copy of)
    if declare -F on_fail >/dev/null; then
        on_fail 2>&1 | sed 's/^/#   /' | head -40
    fi
    return 0
}

# check NAME EXPECTED_EXIT [-m REGEX] COMMAND...: the exit status and, with
# -m, a line of the command's stdout or stderr matching REGEX.
check() {
    local name=$1 want=$2 pattern= got; shift 2
    if [ "$1" = -m ]; then pattern=$2; shift 2; fi
    "$@" >"$work/out" 2>&1
    got=$?
    if [ "$got" != "$want" ]; then
        fail "$name" "exit $got, want $want" "$work/out"
    elif [ -n "$pattern" ] && ! grep -qE -- "$pattern" "$work/out"; then
        fail "$name" "output does not match /$pattern/" "$work/out"
    else
        pass "$name"
    fi
}

# same NAME EXPECTED_STDOUT COMMAND...: exit 0 and exactly that output.
same() {
    local name=$1 want=$2 got rc; shift 2
    "$@" >"$work/out" 2>"$work/err"
    rc=$?
    got=$(cat "$work/out")
    if [ "$rc" != 0 ]; then
        fail "$name" "exit $rc" "$work/err"
    elif [ "$got" != "$want" ]; then
        printf 'got:  %s\nwant: %s\n' "$got" "$want" >"$work/diff"
        fail "$name" "wrong output" "$work/diff"
    else
        pass "$name"
    fi
}

# eventually NAME WANT CMD...: until CMD prints WANT (EVENTUALLY_S seconds,
# 40 unless set)
eventually() {
    local name=$1 want=$2 out= start=$SECONDS; shift 2
    while [ $((SECONDS - start)) -lt "${EVENTUALLY_S:-40}" ]; do
        out=$("$@" 2>&1)
        if [ "$out" = "$want" ]; then
            # a slow pass said, so a slowing shows before it fails
            [ $((SECONDS - start)) -gt 20 ] \
                && name="$name (after $((SECONDS - start)) s)"
            pass "$name"
            return 0
        fi
        sleep 0.1
    done
    fail "$name" "got: $out"
    return 1
}

# port_block COUNT: the first of COUNT loopback TCP ports, each free when
# asked, below the kernel's ephemeral range (from 32768 here), where a
# client's own outgoing connection may hold any port and make a listener
# fail to bind.  A random base, tried again while any port is taken.
port_block() {
    perl -MIO::Socket::INET -e '
        my $count = shift;
        for (1 .. 200) {
            my $base = 10000 + int(rand(32000 - 10000 - $count));
            my @held;
            for my $port ($base .. $base + $count - 1) {
                my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1",
                    LocalPort => $port, Proto => "tcp", Listen => 1,
                    ReuseAddr => 1) or last;
                push @held, $s;
            }
            if (@held == $count) { print "$base\n"; exit 0 }
        }
        die "no block of $count free ports\n";' "$1"
}
