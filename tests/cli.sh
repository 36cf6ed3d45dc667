#!/bin/bash
# The `proven` command as a user runs it: the genuine Nitro document and
# tampered copies through `verify`, `attest` against a one-file HTTP server,
# `status` against a fake provend; exit codes 0 valid, 1 invalid, 2 usage.
# Usage: tests/cli.sh BUILD_DIR
set -u
build=$(cd "${1:-build}" && pwd)
top=$(cd "$(dirname "$0")/.." && pwd)
proven=$build/bin/proven
host=$build/bin/proven-host
fixtures=$top/tests/fixtures
doc=$fixtures/nitro-real-2022-09-15.cose
awsroot=$fixtures/aws-nitro-root.pem
nonce=47b5fba6979cbf7e567e2629
module_id=i-0697c9729fa547b20-enc0183422ede9a5dc8
pcr0=ea4212ee889ba1b4dbfe744aadecca8b1930de60a3a1ce3b0c79f42b231700fc561c3d9b34f0565ed9eb6f460996624c
when=2022-09-15T17:43:28.848Z
pcr8=6f1ff0f2a7a0b1c4e02a3a544eb0ff2dffb8b2922b8908d46365c0f0120934092149ec35814c8d944ef1b8fb564b46c7
zeros=$(printf '0%.0s' $(seq 1 96))
work=$(mktemp -d)
passed=0 failed=0
server_pids=()

cleanup() {
    local pid
    for pid in "${server_pids[@]}"; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT

. "$(dirname "$0")/lib.sh"     # pass, fail, check, same

# flip FILE OFFSET: xors one byte in place.
flip() {
    perl -e 'open(my $f, "+<:raw", $ARGV[0]) or die "$ARGV[0]: $!";
             seek($f, $ARGV[1], 0); read($f, my $b, 1) == 1 or die "short";
             seek($f, $ARGV[1], 0); print $f chr(ord($b) ^ 0x01);' "$@"
}

# Runs a background helper and waits for the file it creates when ready.
start_server() {   # start_server READY_FILE PERL_CODE ARGS...
    local ready=$1 code=$2; shift 2
    perl -e "$code" "$@" 2>>"$work/servers.log" &
    server_pids+=($!)
    for _ in $(seq 1 250); do
        [ -e "$ready" ] && return 0
        sleep 0.02
    done
    echo "# helper server did not start"; cat "$work/servers.log"
    return 1
}

if [ ! -x "$proven" ]; then
    echo "not ok - $proven is not built"; echo "0 passed, 1 failed"; exit 1
fi

# ---- verify: the genuine document -----------------------------------------

check "genuine document verifies at its own time with its nonce" 0 \
    -m "^valid: module_id $module_id, timestamp $when, pcr0 $pcr0" \
    "$proven" verify "$doc" --at doc --nonce $nonce
check "options before the file work too" 0 \
    "$proven" verify --at doc --nonce $nonce "$doc"
check "--at with the document's time in milliseconds" 0 \
    "$proven" verify "$doc" --at 1663263808848
check "the document read from stdin" 0 -m "^valid: " \
    sh -c "'$proven' verify --at doc --nonce $nonce < '$doc'"
check "the document read from - (stdin)" 0 \
    sh -c "cat '$doc' | '$proven' verify - --at doc"
check "--root with the AWS root PEM" 0 \
    "$proven" verify "$doc" --at doc --root "$awsroot"
check "correct --pcr 0 verifies" 0 \
    "$proven" verify "$doc" --at doc --pcr 0=$pcr0
check "several correct --pcr verify" 0 \
    "$proven" verify "$doc" --at doc --pcr 0=$pcr0 --pcr 8=$pcr8 \
        --pcr 5=$zeros

# ---- verify: invalid documents and expectations ---------------------------

cp "$doc" "$work/badsig.cose"
flip "$work/badsig.cose" $(($(wc -c < "$doc") - 2))
check "a flipped signature byte is refused" 1 -m "invalid: bad signature" \
    "$proven" verify "$work/badsig.cose" --at doc

cp "$doc" "$work/badpayload.cose"
offset=$(perl -0777 -ne 'print index($_, "func_checksum") + 20' "$doc")
flip "$work/badpayload.cose" "$offset"
check "a flipped byte in user_data is refused" 1 -m "invalid: bad signature" \
    "$proven" verify "$work/badpayload.cose" --at doc

check "--at now is refused: the certificates expired in 2022" 1 \
    -m "invalid: expired" "$proven" verify "$doc"
check "--at before the leaf certificate is refused" 1 -m "invalid: expired" \
    "$proven" verify "$doc" --at 1600000000000
check "a wrong --nonce is refused" 1 -m "invalid: nonce mismatch" \
    "$proven" verify "$doc" --at doc --nonce 47b5fba6979cbf7e567e2620
check "a wrong --pcr 0 is refused" 1 -m "invalid: pcr mismatch" \
    "$proven" verify "$doc" --at doc --pcr 0=$zeros
check "a wrong PCR among right ones is refused" 1 -m "invalid: pcr mismatch" \
    "$proven" verify "$doc" --at doc --pcr 0=$pcr0 --pcr 1=$pcr0

head -c 3000 /dev/urandom > "$work/garbage"
check "garbage input is refused" 1 -m "invalid: malformed" \
    "$proven" verify "$work/garbage" --at doc
check "empty input is refused" 1 -m "invalid: " \
    sh -c "'$proven' verify - < /dev/null"
head -c 4000 "$doc" > "$work/truncated.cose"
check "a truncated document is refused" 1 -m "invalid: malformed" \
    "$proven" verify "$work/truncated.cose" --at doc
head -c 70000 /dev/zero > "$work/huge"
check "input over 64 KiB is refused" 1 -m "larger than 65536" \
    sh -c "'$proven' verify < '$work/huge'"

if command -v openssl >/dev/null; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes \
        -keyout "$work/other.key" -out "$work/other.pem" -days 1 \
        -subj /CN=other >/dev/null 2>&1
    check "another root is not trusted" 1 -m "invalid: untrusted root" \
        "$proven" verify "$doc" --at doc --root "$work/other.pem"
fi

# ---- verify --json ---------------------------------------------------------

# json_is FILE PERL_CONDITION: FILE holds JSON, the condition reads it as $j.
json_is() {
    perl -MJSON::PP -e 'local $/; my $j = decode_json(<STDIN>);
                        exit(eval($ARGV[0]) ? 0 : 1);' "$2" < "$1"
}

verify_json_valid() {
    "$proven" verify "$doc" --at doc --nonce $nonce --json >"$work/v.json" \
        || return
    json_is "$work/v.json" '$j->{valid} && !defined $j->{reason}
        && $j->{status} eq "ok"
        && $j->{document}{module_id} eq "'$module_id'"
        && $j->{document}{pcrs}{0} eq "'$pcr0'"'
}

verify_json_invalid() {
    local rc
    "$proven" verify "$doc" --json >"$work/i.json"
    rc=$?
    json_is "$work/i.json" '!$j->{valid} && $j->{status} eq "expired"
        && $j->{reason} =~ /expired/' || return 9
    return $rc
}

check "--json parses, valid true, with the document" 0 verify_json_valid
check "--json of an invalid document says why" 1 verify_json_invalid

# ---- usage errors ----------------------------------------------------------

check "an unknown option is a usage error" 2 -m "unknown option --frobnicate" \
    "$proven" verify "$doc" --frobnicate
check "a missing option value is a usage error" 2 -m "needs a value" \
    "$proven" verify "$doc" --nonce
check "bad --nonce hex is a usage error" 2 -m "bad --nonce" \
    "$proven" verify "$doc" --nonce xyz
check "odd-length --nonce hex is a usage error" 2 -m "bad --nonce" \
    "$proven" verify "$doc" --nonce abc
check "a --pcr without = is a usage error" 2 -m "bad --pcr" \
    "$proven" verify "$doc" --pcr 0
check "a --pcr index out of range is a usage error" 2 -m "bad --pcr" \
    "$proven" verify "$doc" --pcr 32=00
check "a --pcr with bad hex is a usage error" 2 -m "bad --pcr" \
    "$proven" verify "$doc" --pcr 0=0g
check "a --pcr given twice is a usage error" 2 -m "given twice" \
    "$proven" verify "$doc" --pcr 0=00 --pcr 0=00
check "a bad --at is a usage error" 2 -m "bad --at" \
    "$proven" verify "$doc" --at yesterday
check "a missing file is a usage error" 2 -m "cannot open" \
    "$proven" verify "$work/missing.cose"
check "a directory is a usage error" 2 -m "cannot read" \
    "$proven" verify "$work"
check "a --root that is not PEM is a usage error" 2 -m "no PEM certificate" \
    "$proven" verify "$doc" --root "$doc"
check "two documents are a usage error" 2 "$proven" verify "$doc" "$doc"
check "no command is a usage error" 2 -m "^usage: proven" "$proven"
check "an unknown command is a usage error" 2 -m "unknown command" \
    "$proven" frobnicate
check "proven --help" 0 -m "^usage: proven <command>" "$proven" --help
check "proven help" 0 -m "^  verify" "$proven" help
check "proven help attest" 0 -m "^usage: proven attest" "$proven" help attest
check "proven verify --help" 0 -m "^usage: proven verify" \
    "$proven" verify --help
check "proven status --help" 0 -m "^usage: proven status" \
    "$proven" status --help

# ---- attest against a one-file HTTP server ---------------------------------

http_server='
use IO::Socket::INET;
my ($doc, $ready, $log) = @ARGV;
alarm 120;
my $srv = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 0,
    Listen => 5, ReuseAddr => 1) or die "listen: $!";
open(my $f, "<:raw", $doc) or die "$doc: $!";
my $body = do { local $/; <$f> };
open(my $p, ">", "$ready.tmp") or die; print $p $srv->sockport; close $p;
rename("$ready.tmp", $ready);
while (my $c = $srv->accept) {
    my $line = <$c> // next;
    while (my $h = <$c>) { last if $h =~ /^\r?\n$/ }
    open(my $l, ">>", $log); print $l $line; close $l;
    my ($status, $type, $out) = $line =~ m{^GET /attestation\?}
        ? ("200 OK", "application/cbor", $body)
        : ("404 Not Found", "text/plain", "no attestation here\n");
    print $c "HTTP/1.1 $status\r\nContent-Type: $type\r\nContent-Length: ",
        length($out), "\r\nConnection: close\r\n\r\n", $out;
    close $c;
}'

if start_server "$work/http.port" "$http_server" "$doc" "$work/http.port" \
    "$work/http.log"
then
    url=http://127.0.0.1:$(cat "$work/http.port")
    check "attest fetches and verifies with --nonce" 0 \
        -m "^valid: .*nonce $nonce" \
        "$proven" attest "$url/attestation" --nonce $nonce --at doc
    check "attest appended ?nonce= to the URL" 0 \
        grep -q "^GET /attestation?nonce=$nonce HTTP" "$work/http.log"
    check "attest appends &nonce= to a URL with a query" 0 \
        sh -c "'$proven' attest '$url/attestation?format=cbor' --nonce $nonce \
            --at doc && grep -q \
            '^GET /attestation?format=cbor&nonce=$nonce HTTP' '$work/http.log'"
    check "attest --json" 0 -m '"valid": true' \
        "$proven" attest "$url/attestation" --nonce $nonce --at doc --json
    check "attest with a fresh random nonce refuses the replayed document" 1 \
        -m "invalid: nonce mismatch" \
        "$proven" attest "$url/attestation" --at doc
    check "attest sent a 32-byte random nonce" 0 \
        grep -qE "^GET /attestation\?nonce=[0-9a-f]{64} HTTP" "$work/http.log"
    check "attest checks PCRs too" 1 -m "invalid: pcr mismatch" \
        "$proven" attest "$url/attestation" --nonce $nonce --at doc \
            --pcr 0=$zeros
    check "attest shows a non-200 answer" 1 -m "no attestation here" \
        "$proven" attest "$url/elsewhere" --nonce $nonce --at doc
fi

# ---- image: an EIF written by perl, its PCRs by Digest::SHA ----------------

# make_eif FILE RAMDISK2: kernel, cmdline, metadata and two ramdisks
make_eif() {
    perl -MCompress::Zlib=crc32 -e '
        my ($file, $rd2) = @ARGV;
        my @parts = ([1, "kernel"], [2, "console=ttyS0"], [5, "{}"],
                     [3, "init ramdisk"], [3, $rd2]);
        @parts = grep { $_->[0] != 1 } @parts if $ENV{EIF_NO_KERNEL};
        my ($off, $body, @offs, @sizes) = (548, "");
        for my $p (@parts) {
            push @offs, $off; push @sizes, length $p->[1];
            my $sec = pack("n n Q>", $p->[0], 0, length $p->[1]) . $p->[1];
            $body .= $sec; $off += length $sec;
        }
        push @offs, 0 while @offs < 32; push @sizes, 0 while @sizes < 32;
        my $hdr = ".eif" . pack("n n Q> Q> n n", 4, 0, 1 << 29, 2, 0,
                                scalar @parts)
                  . pack("Q>32", @offs) . pack("Q>32", @sizes) . pack("N", 0);
        my $crc = crc32($body, crc32($hdr));
        open(my $f, ">", $file) or die; binmode $f;
        print $f $hdr, pack("N", $crc), $body;' "$1" "$2"
}
pcr() {   # pcr TEXT: SHA-384(48 zeros || SHA-384(TEXT)) in hex
    perl -MDigest::SHA=sha384,sha384_hex -e \
        'print sha384_hex(("\0" x 48) . sha384($ARGV[0]))' "$1"
}
make_eif "$work/a.eif" "app one"
make_eif "$work/b.eif" "app two"
check "image pcrs: PCR0 over kernel, cmdline and both ramdisks" 0 \
    -m "\"PCR0\": \"$(pcr "kernelconsole=ttyS0init ramdiskapp one")\"" \
    "$proven" image pcrs "$work/a.eif"
check "PCR1 over kernel, cmdline and the first ramdisk" 0 \
    -m "\"PCR1\": \"$(pcr "kernelconsole=ttyS0init ramdisk")\"" \
    "$proven" image pcrs "$work/a.eif"
check "PCR2 over the later ramdisks" 0 \
    -m "\"PCR2\": \"$(pcr "app one")\"" "$proven" image pcrs "$work/a.eif"
check "another application ramdisk: PCR1 the same, PCR2 not" 0 \
    -m "\"PCR1\": \"$(pcr "kernelconsole=ttyS0init ramdisk")\"" \
    "$proven" image pcrs "$work/b.eif"
check "and its own PCR2" 0 -m "\"PCR2\": \"$(pcr "app two")\"" \
    "$proven" image pcrs "$work/b.eif"
check "image describe shows the sections and the metadata" 0 \
    -m "^section 2: metadata, 2 bytes" "$proven" image describe "$work/a.eif"
perl -e 'open(my $f, "+<", $ARGV[0]) or die; seek($f, -1, 2); print $f "X"' \
    "$work/a.eif"
check "a changed byte: refused by its CRC" 1 -m "the file was changed" \
    "$proven" image pcrs "$work/a.eif"
head -c 600 "$work/b.eif" >"$work/cut.eif"
check "a file cut short: a clear error" 1 -m "cut short" \
    "$proven" image pcrs "$work/cut.eif"
check "image without a file is a usage error" 2 "$proven" image pcrs

# image build: two ramdisks made from directories, the same bytes twice
mkdir -p "$work/img/boot/bin" "$work/img/app"
echo '#!/bin/sh' >"$work/img/boot/init"
ln -s ../init "$work/img/boot/bin/sh"
echo 'the app' >"$work/img/app/app.js"
echo 'not a real kernel' >"$work/img/kernel"
build_image() {   # build_image OUT
    SOURCE_DATE_EPOCH=1700000000 "$proven" image build \
        --kernel "$work/img/kernel" --cmdline "console=ttyS0" \
        --ramdisk "$work/img/boot" --ramdisk "$work/img/app" --out "$1"
}
build_image "$work/img/one.eif" >"$work/img/one.pcrs"
touch -d '2001-01-01' "$work/img/app/app.js" "$work/img/boot/init"
build_image "$work/img/two.eif" >/dev/null
check "image build twice, files touched between: the same bytes" 0 \
    cmp "$work/img/one.eif" "$work/img/two.eif"
same "image pcrs on the file prints what the build did" \
    "$(cat "$work/img/one.pcrs")" "$proven" image pcrs "$work/img/one.eif"
check "its ramdisks are gzip'd newc cpio" 0 -m '^070701' sh -c \
    "'$proven' image describe '$work/img/one.eif' >/dev/null && \
     tail -c +\$((\$('$proven' image describe '$work/img/one.eif' \
       | sed -n 's/^section 3: ramdisk, [0-9]* bytes at //p') + 13)) \
       '$work/img/one.eif' | gzip -dc 2>/dev/null | head -c 6; echo"
echo 'the app, changed' >"$work/img/app/app.js"
build_image "$work/img/three.eif" >"$work/img/three.pcrs"
check "one byte of the app: PCR1 the same" 0 \
    -m "$(grep PCR1 "$work/img/one.pcrs" | tr -d ' ,')" \
    sh -c "tr -d ' ,' <'$work/img/three.pcrs'"
check "and PCR2 not" 1 grep -qF "$(grep PCR2 "$work/img/one.pcrs")" \
    "$work/img/three.pcrs"
mkfifo "$work/img/app/fifo"
check "a ramdisk with a fifo in it is refused" 1 -m "not a file, directory or link" \
    build_image "$work/img/four.eif"

check "attest without a URL is a usage error" 2 "$proven" attest
check "attest with a non-HTTP URL is a usage error" 2 -m "http://" \
    "$proven" attest "ftp://127.0.0.1/attestation"
check "attest to a closed port fails" 1 \
    "$proven" attest "http://127.0.0.1:1/attestation"

# ---- status against a fake provend -----------------------------------------

# A response frame: {"id": 1, "ok": true, "result": {"node_id": "abc",
# "key": h'0102', "n": -2, "list": [true, null]}} (or an error answer).
unix_server='
use IO::Socket::UNIX;
use Socket;
my ($path, $mode) = @ARGV;
alarm 120;
my $srv = IO::Socket::UNIX->new(Type => SOCK_STREAM, Local => $path,
    Listen => 5) or die "listen $path: $!";
my %answer = (
    ok => "\xa3\x62id\x01\x62ok\xf5\x66result\xa4\x67node_id\x63abc"
        . "\x63key\x42\x01\x02\x61n\x21\x64list\x82\xf5\xf6",
    error => "\xa3\x62id\x01\x62ok\xf4\x65error\xa2\x64code\x64busy"
        . "\x67message\x68too busy",
);
while (my $c = $srv->accept) {
    read($c, my $h, 4) == 4 or next;
    my $n = unpack("N", $h);
    read($c, my $req, $n) == $n or next;
    if ($mode eq "silent") { sleep 8; next }
    print $c pack("N", length $answer{$mode}), $answer{$mode};
    close $c;
}'

start_server "$work/ok.sock" "$unix_server" "$work/ok.sock" ok
check "status prints provend's answer as JSON" 0 -m '"node_id": "abc"' \
    "$proven" status --socket "$work/ok.sock"
check "status shows byte strings as hex" 0 \
    sh -c "'$proven' status --socket '$work/ok.sock' | perl -MJSON::PP -e '
        local \$/; my \$j = decode_json(<STDIN>);
        exit(\$j->{key} eq \"0102\" && \$j->{n} == -2
             && \$j->{list}[0] && !defined \$j->{list}[1] ? 0 : 1)'"
mkdir -p "$work/data"
ln -s "$work/ok.sock" "$work/data/provend.sock"
check "status finds \$PROVEN_DATA/provend.sock" 0 -m '"node_id"' \
    env PROVEN_DATA="$work/data" "$proven" status

start_server "$work/err.sock" "$unix_server" "$work/err.sock" error
check "status reports provend's error" 1 -m "busy: too busy" \
    "$proven" status --socket "$work/err.sock"

start_server "$work/silent.sock" "$unix_server" "$work/silent.sock" silent
check "status gives up on a silent provend" 1 -m "did not answer" \
    timeout 20 "$proven" status --socket "$work/silent.sock"

check "status without provend fails clearly" 1 -m "not reachable" \
    "$proven" status --socket "$work/nobody.sock"
check "status with a stray argument is a usage error" 2 \
    "$proven" status now

# ---- proven-host, with a stand-in for qemu ----------------------------------------

# what qemu would be given: its arguments, and the files they name (gone
# once proven-host is done)
cat >"$work/qemu" <<'SH'
#!/bin/sh
out=$(dirname "$0")/qemu-got
printf '%s\n' "$@" >"$out.args"
while [ $# -gt 0 ]; do
    case $1 in
    -kernel) cp "$2" "$out.kernel" ;;
    -initrd) cp "$2" "$out.initrd" ;;
    -fw_cfg) cp "${2#*file=}" "$out.pcrs" ;;
    esac
    shift
done
[ -n "${QEMU_FAIL:-}" ] && { echo boot >>"$out.boots"; exit 3; }
[ -z "${QEMU_STUBBORN:-}" ] && exit 0
trap '' INT TERM
exec sleep 300
SH
chmod +x "$work/qemu"
make_eif "$work/host.eif" "app one"
got=$work/qemu-got
check "proven-host runs qemu on the image, prints its PCRs" 0 \
    -m "\"PCR2\": \"$(pcr "app one")\"" \
    "$host" run --qemu "$work/host.eif" --qemu-binary "$work/qemu"
check "qemu gets the image's kernel" 0 -m '^kernel$' cat "$got.kernel"
check "its ramdisks, one after the other, as one initramfs" 0 \
    -m '^init ramdiskapp one$' cat "$got.initrd"
check "its cmdline" 0 -m '^console=ttyS0$' \
    sh -c "grep -A1 '^-append$' '$got.args' | tail -1"
check "and PCR0-2 in fw_cfg opt/proven/pcrs, 3 x 48 bytes" 0 \
    -m "^$(pcr "kernelconsole=ttyS0init ramdiskapp one")$(pcr "kernelconsole=ttyS0init ramdisk")$(pcr "app one")$" \
    sh -c "od -An -v -tx1 '$got.pcrs' | tr -d ' \n'; echo"
"$host" run --qemu "$work/host.eif" --qemu-binary "$work/qemu" --http 9080 \
    --https 9443 >/dev/null 2>&1
check "the guest's relays and agent forwarded from loopback only, its network closed" 0 \
    -m '^user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:[0-9]+-:5080,hostfwd=tcp:127.0.0.1:[0-9]+-:5443,hostfwd=tcp:127.0.0.1:8090-:7002$' \
    cat "$got.args"
check "each port forwarded is a port of its own" 0 sh -c \
    "grep '^user,' '$got.args' | grep -o 'tcp:127.0.0.1:[0-9]*-' | sort | uniq -d | grep -c . | grep -qx 0"
: >"$work/egress.allow"
"$host" run --qemu "$work/host.eif" --qemu-binary "$work/qemu" \
    --egress "$work/egress.allow" --control-port 9090 >/dev/null 2>&1
check "--egress: the guest's way out, to proven-egress host through a proven-relay" 0 \
    -m "hostfwd=tcp:127.0.0.1:9090-:7002,guestfwd=tcp:10.0.2.100:7003-cmd:$build/bin/proven-relay --listen fd:0 --to unix:[^ ]*/egress.sock\$" \
    grep '^user,id=net0,restrict=on,' "$got.args"
check "--control-port and --grace refuse what is not a number in range" 2 \
    -m 'wants seconds from 1 to 300' "$host" run --qemu "$work/host.eif" --grace 0
"$host" run --qemu "$work/host.eif" --qemu-binary "$work/qemu" \
    --keyd "unix:$work/keyd.sock" >/dev/null 2>&1
check "--keyd: the guest's one way out, to keyd through a proven-relay" 0 \
    -m ",guestfwd=tcp:10.0.2.100:7000-cmd:$build/bin/proven-relay --listen fd:0 --to unix:$work/keyd.sock\$" \
    grep '^user,id=net0,restrict=on,' "$got.args"
check "--keyd refuses what qemu's options would split" 1 -m 'may hold only' \
    "$host" run --qemu "$work/host.eif" --qemu-binary "$work/qemu" \
    --keyd "unix:$work/a,b.sock"
check "--keyd refuses a bad address" 1 -m 'is not vsock' \
    "$host" run --qemu "$work/host.eif" --qemu-binary "$work/qemu" \
    --keyd "keyd.example:7000"
rm -f "$got.boots"
check "--restart 2: a guest that stops by itself is booted again, twice" 3 \
    -m 'booting it again in 2 s \(restart 2 of 2\)' \
    env QEMU_FAIL=1 "$host" run --qemu "$work/host.eif" \
    --qemu-binary "$work/qemu" --restart 2
check "so qemu ran three times" 0 -m '^3$' sh -c "wc -l <'$got.boots'"
rm -f "$got.boots"
QEMU_FAIL=1 "$host" run --qemu "$work/host.eif" --qemu-binary "$work/qemu" \
    --restart 5 >"$work/restart.log" 2>&1 &
host_pid=$!
sleep 0.5
kill -TERM "$host_pid"
wait "$host_pid"
check "asked to stop, it boots no more" 0 -m '^1$' sh -c "wc -l <'$got.boots'"
check "a bad --restart is a usage error" 2 -m '--restart wants a number' \
    "$host" run --qemu "$work/host.eif" --restart lots
EIF_NO_KERNEL=1 make_eif "$work/nokernel.eif" "app one"
check "an image without a kernel is refused" 1 -m 'has no kernel' \
    "$host" run --qemu "$work/nokernel.eif" --qemu-binary "$work/qemu"
mkdir -p "$work/tmp"
TMPDIR=$work/tmp "$host" run --qemu "$work/host.eif" \
    --qemu-binary "$work/qemu" >/dev/null 2>&1
check "proven-host made its files in \$TMPDIR, and left none behind" 0 \
    sh -c "grep -q '^$work/tmp/proven-host' '$got.args' \
           && [ -z \"\$(ls -A '$work/tmp')\" ]"
QEMU_STUBBORN=1 "$host" run --qemu "$work/host.eif" --qemu-binary "$work/qemu" \
    --stop-after 1 >"$work/stubborn.log" 2>&1 &
host_pid=$!
sleep 0.5
kill -INT "$host_pid"
for _ in $(seq 1 100); do
    kill -0 "$host_pid" 2>/dev/null || break
    sleep 0.1
done
check "a guest that does not stop is killed after --stop-after" 0 \
    sh -c "! kill -0 $host_pid 2>/dev/null"
check "and proven-host says so" 0 -m 'stopping qemu' cat "$work/stubborn.log"
kill -KILL "$host_pid" 2>/dev/null

# ---- tls self-signed ----------------------------------------------------------

check "tls self-signed writes a key and a certificate" 0 -m 'cert.pem$' \
    "$proven" tls self-signed --dir "$work/tls" --name node.example
check "the key is the owner's alone" 0 -m '^600$' stat -c %a "$work/tls/key.pem"
check "the certificate names the host and loopback" 0 \
    -m 'DNS:node.example, IP Address:127.0.0.1' \
    openssl x509 -in "$work/tls/cert.pem" -noout -ext subjectAltName
check "and is signed by that key" 0 -m 'OK' sh -c \
    "openssl verify -CAfile '$work/tls/cert.pem' '$work/tls/cert.pem'"
cp "$work/tls/key.pem" "$work/tls/key.before"
"$proven" tls self-signed --dir "$work/tls" >/dev/null
check "run again, it keeps what is there (the same key)" 0 \
    cmp "$work/tls/key.before" "$work/tls/key.pem"
"$proven" tls self-signed --dir "$work/tls-other" >/dev/null
cp "$work/tls-other/cert.pem" "$work/tls/cert.pem"
"$proven" tls self-signed --dir "$work/tls" >/dev/null
check "a certificate of another key is replaced, with a new pair" 0 \
    -m 'OK' bash -c "! cmp -s '$work/tls/key.before' '$work/tls/key.pem' && \
    openssl x509 -in '$work/tls/cert.pem' -noout -pubkey \
        | cmp - <(openssl pkey -in '$work/tls/key.pem' -pubout) && echo OK"
check "tls without --dir is a usage error" 2 -m 'dir DIR is needed' \
    "$proven" tls self-signed
check "tls refuses a name that is no host name" 2 -m 'host name' \
    "$proven" tls self-signed --dir "$work/tls2" --name 'a b/c'

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
