#!/bin/bash
# Storage as an operator sees it: `proven kv` and `proven sql` against a
# provend of our own: every op, isolation between scopes, persistence over
# restarts, SQL migrations and the authorizer, a kill -9 in the middle of a
# stream of writes, and no plain text under the data directory.
# Usage: tests/storage.sh BUILD_DIR
set -u
build=$(cd "${1:-build}" && pwd)
proven=$build/bin/proven
provend=$build/bin/provend
work=$(mktemp -d)
data=$work/data
export PROVEN_DATA=$data
passed=0 failed=0
provend_pid=
writer_pids=()

cleanup() {
    [ ${#writer_pids[@]} -gt 0 ] && kill "${writer_pids[@]}" 2>/dev/null
    if [ -n "$provend_pid" ]; then
        kill -KILL "$provend_pid" 2>/dev/null
        wait "$provend_pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT

. "$(dirname "$0")/lib.sh"

start_provend() {
    rm -f "$data/provend.sock"
    "$provend" --data "$data" --provider dev >>"$work/provend.log" 2>&1 &
    provend_pid=$!
    for _ in $(seq 1 250); do
        "$proven" status >/dev/null 2>&1 && return 0
        kill -0 "$provend_pid" 2>/dev/null || break
        sleep 0.04
    done
    echo "# provend did not start:"; tail -20 "$work/provend.log"
    return 1
}

stop_provend() {   # stop_provend [SIGNAL]
    kill -"${1:-TERM}" "$provend_pid"
    wait "$provend_pid" 2>/dev/null
    provend_pid=
}

kv() { "$proven" kv "$@"; }
sql() { "$proven" sql "$@"; }

if [ ! -x "$proven" ] || [ ! -x "$provend" ]; then
    echo "not ok - $proven and $provend are not built"
    echo "0 passed, 1 failed"; exit 1
fi

start_provend || { echo "0 passed, 1 failed"; exit 1; }

# ---- kv: string stores -------------------------------------------------------

check "kv set prints the new revision" 0 -m '^\{"revision":1[,}]' \
    kv set --app demo greeting hello
same "kv get prints the value alone" hello kv get --app demo greeting
check "kv get --json prints value and revision" 0 \
    -m '^\{("value":"hello","revision":1|"revision":1,"value":"hello")\}$' \
    kv get --app demo greeting --json
check "a second set bumps the revision" 0 -m '^\{"revision":2[,}]' \
    kv set --app demo greeting hello
check "--if-revision with a stale revision is refused" 1 \
    -m "revision_mismatch" kv set --app demo greeting bye --if-revision 1
same "the refused set changed nothing" hello kv get --app demo greeting
check "--if-revision with the current revision succeeds" 0 \
    -m '"revision":3' kv set --app demo --if-revision 2 greeting hello
check "--if-revision 0 refuses an existing key" 1 -m "revision_mismatch" \
    kv set --app demo greeting x --if-revision 0
check "--if-revision 0 creates a new key" 0 \
    kv set --app demo fresh new --if-revision 0
check "kv del removes a key" 0 -m '"deleted":true' kv del --app demo fresh
check "kv get of a deleted key: not found, exit 1" 1 -m "not found" \
    kv get --app demo fresh
check "kv del of a missing key says so" 0 -m '"deleted":false' \
    kv del --app demo fresh
check "kv del --if-revision with a stale revision is refused" 1 \
    -m "revision_mismatch" kv del --app demo greeting --if-revision 1
check "kv get of a key never set: not found, exit 1" 1 -m "not found" \
    kv get --app demo never-set
same "values keep spaces and UTF-8" "grüße, welt" \
    sh -c "'$proven' kv set --app demo utf 'grüße, welt' >/dev/null &&
           '$proven' kv get --app demo utf"
same "an empty value is a value" "" \
    sh -c "'$proven' kv set --app demo empty '' >/dev/null &&
           '$proven' kv get --app demo empty"
same "keys given in hex are the same keys" hello \
    kv get --app demo --hex 6772656574696e67

# ---- kv: bytes and key stores ---------------------------------------------

check "bytes store: set a value given in hex" 0 \
    kv set --app demo --store bin --type bytes blob 00ff10a0
same "bytes store: get prints hex" 00ff10a0 \
    kv get --app demo --store bin --type bytes blob
check "bytes store: a value that is not hex is a usage error" 2 \
    kv set --app demo --store bin --type bytes blob nothex
check "an unknown --type is a usage error" 2 \
    kv get --app demo --type float greeting

# RFC 8032 section 7.1, test 2.
seed=4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb
pub=3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c
sig=92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da
sig=${sig}085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00
check "key store: set with a seed" 0 \
    kv set --app demo --store signer --type key rfc "$seed"
same "key store: get prints the public key only" "$pub" \
    kv get --app demo --store signer --type key rfc
same "key store: sign gives RFC 8032's signature" "$sig" \
    kv sign --app demo --store signer --hex 726663 72
check "key store: set without a seed generates a key" 0 \
    kv set --app demo --store signer --type key fresh
kv get --app demo --store signer --type key fresh >"$work/pub" 2>&1
if grep -qxE '[0-9a-f]{64}' "$work/pub"; then
    pass "key store: a generated key has a 32-byte public key"
else
    fail "key store: a generated key has a 32-byte public key" \
        "output" "$work/pub"
fi
kv sign --app demo --store signer fresh "signed message" >"$work/sig" 2>&1
printf 'signed message' >"$work/msg"
unhex() { perl -ne 'chomp; print pack("H*", $_)'; }
# SubjectPublicKeyInfo for Ed25519 = this prefix || the raw key.
if echo "302a300506032b6570032100$(cat "$work/pub")" | unhex \
        >"$work/pub.der" \
    && unhex <"$work/sig" >"$work/sig.bin" \
    && openssl pkeyutl -verify -pubin -keyform DER -inkey "$work/pub.der" \
        -rawin -in "$work/msg" -sigfile "$work/sig.bin" >/dev/null 2>&1
then
    pass "key store: openssl verifies a signature by a generated key"
else
    fail "key store: openssl verifies a signature by a generated key" \
        "signature" "$work/sig"
fi
check "kv sign on a string store is refused" 1 -m "bad_request|not_found" \
    kv sign --app demo greeting "message"

# ---- kv: keys, prefixes, cursors -------------------------------------------

for i in $(seq -w 1 150); do
    kv set --app demo --store list "item-$i" "v$i" >/dev/null || break
done
seq -w 1 150 | sed 's/^/item-/' >"$work/want-keys"
check "kv keys lists every key in order" 0 \
    bash -c "'$proven' kv keys --app demo --store list |
             cmp - '$work/want-keys'"
check "kv keys follows cursors, 7 keys a page" 0 \
    bash -c "'$proven' kv keys --app demo --store list --page 7 |
           cmp - '$work/want-keys'"
check "kv keys --prefix" 0 \
    bash -c "'$proven' kv keys --app demo --store list --prefix item-01 \
                 --page 9 |
           cmp - <(grep '^item-01' '$work/want-keys')"
check "kv keys --limit stops early" 0 \
    bash -c "'$proven' kv keys --app demo --store list --limit 120 --page 50 |
           cmp - <(head -120 '$work/want-keys')"
same "kv keys of an empty store prints nothing" "" \
    kv keys --app demo --store nothing-here

# ---- kv: isolation ----------------------------------------------------------

check "another app does not see demo's key" 1 -m "not found" \
    kv get --app other greeting
same "another app lists no keys" "" kv keys --app other
check "another store does not see the key" 1 -m "not found" \
    kv get --app demo --store elsewhere greeting
check "personal alice: set" 0 \
    kv set --app demo --personal alice greeting hi-alice
same "personal alice reads her own value" hi-alice \
    kv get --app demo --personal alice greeting
check "personal bob does not see alice's value" 1 -m "not found" \
    kv get --app demo --personal bob greeting
same "the app scope is not alice's" hello kv get --app demo greeting
check "alice in another app is another scope" 1 -m "not found" \
    kv get --app other --personal alice greeting
contract=0xAbCd00000000000000000000000000000000EF01
lower=0xabcd00000000000000000000000000000000ef01
check "nft scope: set" 0 \
    kv set --app demo --nft "eth:$contract:42" owner nft-42
same "nft contract hex and token leading zeros are canonical" nft-42 \
    kv get --app demo --nft "eth:$lower:042" owner
check "another token is another scope" 1 -m "not found" \
    kv get --app demo --nft "eth:$lower:43" owner
check "another chain is another scope" 1 -m "not found" \
    kv get --app demo --nft "base:$lower:42" owner
check "the app scope does not see the nft's key" 1 -m "not found" \
    kv get --app demo owner

# ---- kv: bad input ---------------------------------------------------------

check "an upper case app name is refused" 1 -m "bad_request" \
    kv get --app Demo greeting
check "a bad personal identity is refused" 1 -m "bad_request" \
    kv get --app demo --personal 'a b' greeting
check "a non-decimal nft token is refused" 1 -m "bad_request" \
    kv get --app demo --nft eth:0xab:12a owner
check "a key over 1 KiB is refused" 1 -m "bad_request|too_large" \
    kv set --app demo "$(head -c 1100 /dev/zero | tr '\0' k)" v
check "--personal with --nft is a usage error" 2 \
    kv get --app demo --personal a --nft eth:0x1:1 k
check "a malformed --nft is a usage error" 2 kv get --app demo --nft eth k
check "kv without --app is a usage error" 2 kv get greeting
check "an unknown kv action is a usage error" 2 kv frob --app demo k
check "provend still serves after bad requests" 0 -m '^hello$' \
    kv get --app demo greeting

# ---- sql --------------------------------------------------------------------

check "sql: create a table" 0 -m '"changes":0' \
    sql --app demo "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT,
                    n REAL, b BLOB)"
check "sql: insert with parameters" 0 \
    -m '"changes":1,"last_insert_rowid":1\}$' \
    sql --app demo "INSERT INTO notes (body, n, b) VALUES (?, ?, ?)" \
        hello 1.5 "x'00ff'"
check "sql: a second insert" 0 -m '"last_insert_rowid":2' \
    sql --app demo "INSERT INTO notes (body, n, b) VALUES (?, ?, ?)" \
        '"42"' null "x''"
same "sql: a query prints one JSON object per row" \
    '{"id":1,"body":"hello","n":1.5,"b":"00ff"}
{"id":2,"body":"42","n":null,"b":""}' \
    sql --app demo "SELECT id, body, n, b FROM notes ORDER BY id"
same "sql: parameters bind by type" \
    '{"a":"integer","b":"real","c":"text","d":"null","e":"blob","f":"text",'\
'"g":"integer"}' \
    sql --app demo -- "SELECT typeof(?) AS a, typeof(?) AS b, typeof(?) AS c,
        typeof(?) AS d, typeof(?) AS e, typeof(?) AS f, typeof(?) AS g" \
        -7 2.5 '"x"' null "x'01'" plain true
same "sql: a query with a parameter" '{"body":"hello"}' \
    sql --app demo "SELECT body FROM notes WHERE n > ?" 1
check "sql: create a second table" 0 \
    sql --app demo "CREATE TABLE big (v INTEGER)"
check "sql: fill it with 1200 rows in one statement" 0 -m '"changes":1200' \
    sql --app demo "INSERT INTO big (v) WITH RECURSIVE c(x) AS
        (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1200)
        SELECT x FROM c"
check "sql: a query follows cursors over 1200 rows" 0 \
    bash -c "'$proven' sql --app demo 'SELECT v FROM big ORDER BY v' |
           cmp - <(seq 1 1200 | sed 's/.*/{\"v\":&}/')"
check "sql: small pages and --limit" 0 \
    bash -c "'$proven' sql --app demo --page 7 --limit 20 \
               'SELECT v FROM big ORDER BY v' |
           cmp - <(seq 1 20 | sed 's/.*/{\"v\":&}/')"
check "sql: a syntax error is sql_error" 1 -m "sql_error" \
    sql --app demo "SELEC 1"
check "sql: ATTACH is denied" 1 -m "sql_denied" \
    sql --app demo "ATTACH DATABASE '$work/x.db' AS x"
check "sql: load_extension is denied" 1 -m "sql_denied|sql_error" \
    sql --app demo "SELECT load_extension('/lib/x.so')"
check "sql: another app does not see demo's table" 1 -m "no such table" \
    sql --app other "SELECT * FROM notes"
check "sql: alice does not see the app's table" 1 -m "no such table" \
    sql --app demo --personal alice "SELECT * FROM notes"
check "sql: another db does not see the table" 1 -m "no such table" \
    sql --app demo --db second "SELECT * FROM notes"

printf 'CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);\n' \
    >"$work/001.sql"
printf 'ALTER TABLE users ADD COLUMN email TEXT;\n' >"$work/002.sql"
printf 'CREATE INDEX users_email ON users (email);\n' >"$work/003.sql"
same "sql: migrations apply in order" '{"applied":2,"version":2}' \
    sql --app demo --db app --migrate "$work/001.sql" --migrate "$work/002.sql"
same "sql: migrations apply once" '{"applied":0,"version":2}' \
    sql --app demo --db app --migrate "$work/001.sql" --migrate "$work/002.sql"
same "sql: a new migration applies alone, then the statement runs" \
    '{"applied":1,"version":3}
{"changes":1,"last_insert_rowid":1}' \
    sql --app demo --db app --migrate "$work/001.sql" \
        --migrate "$work/002.sql" --migrate "$work/003.sql" \
        "INSERT INTO users (name, email) VALUES (?, ?)" ann ann@example.org
check "sql: the migrations table cannot be read" 1 -m "sql_denied" \
    sql --app demo --db app "SELECT * FROM _proven_migrations"
check "sql: the migrations table cannot be changed" 1 -m "sql_denied" \
    sql --app demo --db app "DELETE FROM _proven_migrations"
check "sql: no table may be named _proven..." 1 -m "sql_denied" \
    sql --app demo --db app "CREATE TABLE _proven_mine (x)"
check "sql: a missing migration file fails" 1 -m "cannot open" \
    sql --app demo --db app --migrate "$work/none.sql"

# ---- persistence -------------------------------------------------------------

stop_provend TERM
start_provend
same "after a restart the app reads its value" hello \
    kv get --app demo greeting
check "after a restart another app still does not see it" 1 -m "not found" \
    kv get --app other greeting
same "after a restart the rows are there" '{"name":"ann"}' \
    sql --app demo --db app "SELECT name FROM users"
same "after a restart alice still has hers" hi-alice \
    kv get --app demo --personal alice greeting

# ---- kill -9 in the middle of writes ---------------------------------------

sql --app crash "CREATE TABLE t (k TEXT)" >/dev/null
: >"$work/acked-keys"; : >"$work/acked-rows"
# Four writers at once, so that commits shared between writers are tested.
writer() {   # writer ID: kv sets and row inserts until provend is gone
    local i=0
    while :; do
        i=$((i + 1))
        "$proven" kv set --app crash --store w "k$1-$i" "v$1-$i" \
            >/dev/null 2>&1 || return 0
        echo "k$1-$i" >>"$work/acked-keys.$1"
        "$proven" sql --app crash "INSERT INTO t (k) VALUES (?)" "r$1-$i" \
            >/dev/null 2>&1 || return 0
        echo "r$1-$i" >>"$work/acked-rows.$1"
    done
}
writer_pids=()
for w in 1 2 3 4; do
    : >"$work/acked-keys.$w"; : >"$work/acked-rows.$w"
    writer "$w" &
    writer_pids+=($!)
done
sleep "$(awk 'BEGIN { srand(); printf "%.2f", 1 + rand() * 2 }')"
stop_provend KILL
wait "${writer_pids[@]}"
writer_pids=()
cat "$work"/acked-keys.* >"$work/acked-keys"
cat "$work"/acked-rows.* >"$work/acked-rows"
start_provend
nkeys=$(wc -l <"$work/acked-keys")
missing=0
while read -r k; do
    v=$(kv get --app crash --store w "$k" 2>&1)
    [ "$v" = "v${k#k}" ] || { missing=$((missing + 1)); echo "$k: $v"; }
done <"$work/acked-keys" >"$work/missing"
if [ "$nkeys" -gt 0 ] && [ "$missing" = 0 ]; then
    pass "kill -9: all $nkeys acknowledged kv writes are there"
else
    fail "kill -9: all $nkeys acknowledged kv writes are there" \
        "$missing missing" "$work/missing"
fi
sql --app crash "SELECT k FROM t" 2>"$work/err" \
    | sed 's/^{"k":"\(.*\)"}$/\1/' | sort >"$work/rows"
nrows=$(wc -l <"$work/acked-rows")
sort "$work/acked-rows" | comm -23 - "$work/rows" >"$work/missing"
if [ "$nrows" -gt 0 ] && [ ! -s "$work/missing" ] && [ ! -s "$work/err" ]
then
    pass "kill -9: all $nrows acknowledged rows are there"
else
    cat "$work/err" >>"$work/missing"
    fail "kill -9: all $nrows acknowledged rows are there" "missing" \
        "$work/missing"
fi
check "kill -9: the databases take writes again" 0 \
    kv set --app crash --store w after-crash yes

# ---- nothing in plain text under the data directory ----------------------

marker=plainscan$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
check "scan: a marker as a key" 0 kv set --app demo "${marker}key" v
check "scan: a marker as a value" 0 kv set --app demo k "${marker}value"
check "scan: a marker as a bytes value" 0 \
    kv set --app demo --store bin --type bytes k \
        "$(printf '%s' "${marker}bytes" | od -An -tx1 | tr -d ' \n')"
check "scan: a marker as a table name" 0 \
    sql --app demo "CREATE TABLE ${marker}table (c TEXT)"
check "scan: a marker as a row" 0 \
    sql --app demo "INSERT INTO ${marker}table VALUES (?)" "${marker}row"
same "scan: the row reads back" "{\"c\":\"${marker}row\"}" \
    sql --app demo "SELECT c FROM ${marker}table"
stop_provend TERM
if grep -r -a -F -l "$marker" "$data" >"$work/found" 2>&1; then
    fail "scan: the marker is nowhere under the data directory" \
        "found" "$work/found"
else
    pass "scan: the marker is nowhere under the data directory"
fi
if grep -r -a -F -l "SQLite format 3" "$data" >"$work/found" 2>&1; then
    fail "scan: no database file is plain SQLite" "found" "$work/found"
else
    pass "scan: no database file is plain SQLite"
fi
if grep -r -a -F -l -e greeting -e hi-alice "$data" >"$work/found" 2>&1; then
    fail "scan: earlier keys and values are not in plain text" \
        "found" "$work/found"
else
    pass "scan: earlier keys and values are not in plain text"
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
