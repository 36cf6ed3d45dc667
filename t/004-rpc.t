# Sessions and signed RPC (ngx_http_proven_rpc_module): every status a
# client can meet over HTTP and the WebSocket handshake.  The app t/apps/web
# is deployed; t/lib/rpc-forge.mjs opens sessions on provend's socket and
# signs the messages sent here.  Frames on an open WebSocket are tested by
# tests/rpc.sh, which keeps a socket open.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use Proven::Test;

Proven::Test::deploy_app('web', "$FindBin::Bin/apps/web");
for (`node $FindBin::Bin/lib/rpc-forge.mjs $ENV{TEST_NGINX_PROVEN_SOCKET}`) {
    chomp;
    my ($k, $v) = split /=/, $_, 2;
    $ENV{"TEST_NGINX_$k"} = $v;
}
$ENV{TEST_NGINX_M1} or die "rpc-forge.mjs printed nothing";

# {"nonce": h'0102', "public_key": 32 bytes}, and the same as multipart
# (the key: RFC 8032's first test key, a point anyone may hold; one of
# small order is refused)
our $cbor_session = pack('H*', 'a2656e6f6e63654201026a7075626c69635f6b65795820'
                               . 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a');
our $multipart = "--XyZ\r\nContent-Disposition: form-data; name=\"nonce\"\r\n"
    . "\r\nabc\r\n--XyZ\r\nContent-Disposition: form-data; "
    . "name=\"public_key\"\r\n\r\n"
    . pack('H*', 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a') . "\r\n--XyZ--\r\n";

our $http_config = <<'CONF';
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
    proven_app_state $TEST_NGINX_PROVEN_DATA/run/state;
CONF

our $config = <<'CONF';
    location = /session { proven_rpc; }
    location ~ ^/app/[^/]+/session$ { proven_rpc; }
    location ~ ^/(app/[^/]+/)?rpc/(http|ws)$ { proven_rpc; }
    location /other/ { proven_rpc; }
CONF

log_level('info');
no_shuffle();
run_tests();

__DATA__

=== TEST 1: a session from a CBOR body is an attestation document
--- http_config eval
$::http_config
--- config eval
$::config
--- request eval
"POST /session\n$::cbor_session"
--- more_headers
Content-Type: application/cbor
--- response_headers
Content-Type: application/cbor
--- response_body_like: ^\x{84}|^\x{d2}
--- no_error_log
[error]



=== TEST 2: and from multipart/form-data
--- http_config eval
$::http_config
--- config eval
$::config
--- request eval
"POST /session\n$::multipart"
--- more_headers
Content-Type: multipart/form-data; boundary=XyZ
--- error_code: 200
--- response_headers
Content-Type: application/cbor
--- no_error_log
[error]



=== TEST 3: a session request without the client's key
--- http_config eval
$::http_config
--- config eval
$::config
--- request eval
"POST /session\n" . pack('H*', 'a1656e6f6e6365420102')
--- more_headers
Content-Type: application/cbor
--- error_code: 400
--- response_body_like: "code":"bad_request".*nonce and public_key



=== TEST 4: a key of the wrong size is provend's refusal, a 400
--- http_config eval
$::http_config
--- config eval
$::config
--- request eval
"POST /session\n" . pack('H*', 'a2656e6f6e63654201026a7075626c69635f6b657942abcd')
--- more_headers
Content-Type: application/cbor
--- error_code: 400
--- response_body_like: "public_key\\" must be 32 bytes



=== TEST 5: multipart without its closing boundary
--- http_config eval
$::http_config
--- config eval
$::config
--- request eval
"POST /session\n--XyZ\r\nContent-Disposition: form-data; name=\"nonce\"\r\n\r\nabc"
--- more_headers
Content-Type: multipart/form-data; boundary=XyZ
--- error_code: 400
--- response_body_like: not closed by the boundary



=== TEST 6: another content type
--- http_config eval
$::http_config
--- config eval
$::config
--- request
POST /session
nonce=1
--- more_headers
Content-Type: application/x-www-form-urlencoded
--- error_code: 415
--- response_body_like: "code":"unsupported_media_type"



=== TEST 7: a session is opened with POST
--- http_config eval
$::http_config
--- config eval
$::config
--- request
GET /session
--- error_code: 405
--- response_headers
Allow: POST



=== TEST 8: an app's session needs an Origin
--- http_config eval
$::http_config
--- config eval
$::config
--- request eval
"POST /app/web/session\n$::cbor_session"
--- more_headers
Content-Type: application/cbor
--- error_code: 400
--- response_body_like: "code":"origin_required"



=== TEST 9: and an app that exists
--- http_config eval
$::http_config
--- config eval
$::config
--- request eval
"POST /app/nosuch/session\n$::cbor_session"
--- more_headers
Content-Type: application/cbor
Origin: https://t.example
--- error_code: 404
--- response_body_like: "code":"not_found"



=== TEST 10: an app's session with its Origin
--- http_config eval
$::http_config
--- config eval
$::config
--- request eval
"POST /app/web/session\n$::cbor_session"
--- more_headers
Content-Type: application/cbor
Origin: https://t.example
--- error_code: 200
--- response_headers
Content-Type: application/cbor



=== TEST 11: a signed message is answered signed
--- http_config eval
$::http_config
--- config eval
$::config
--- raw_request eval
Proven::Test::post_cbor("/rpc/http?session=$ENV{TEST_NGINX_S1}", pack('H*', $ENV{TEST_NGINX_M1}))
--- error_code: 200
--- response_headers
Content-Type: application/cbor
--- response_body_like: ^\x{84}\x{48}\x{a2}\x{01}\x{27}\x{63}seq\x{01}\x{a0}
--- no_error_log
[error]



=== TEST 12: the same message again is a replay
--- http_config eval
$::http_config
--- config eval
$::config
--- raw_request eval
Proven::Test::post_cbor("/rpc/http?session=$ENV{TEST_NGINX_S1}", pack('H*', $ENV{TEST_NGINX_M1}))
--- error_code: 409
--- response_headers
Content-Type: application/json
--- response_body_like: "code":"replayed"



=== TEST 13: a message signed by another key
--- http_config eval
$::http_config
--- config eval
$::config
--- raw_request eval
Proven::Test::post_cbor("/rpc/http?session=$ENV{TEST_NGINX_S1}", pack('H*', $ENV{TEST_NGINX_BADSIG}))
--- error_code: 401
--- response_body_like: "code":"bad_signature"



=== TEST 14: bytes that are no COSE_Sign1
--- http_config eval
$::http_config
--- config eval
$::config
--- request eval
"POST /rpc/http?session=$ENV{TEST_NGINX_S1}\n\x{84}\x{40}"
--- error_code: 400
--- response_body_like: "code":"bad_message"



=== TEST 15: an unknown session
--- http_config eval
$::http_config
--- config eval
$::config
--- raw_request eval
Proven::Test::post_cbor("/rpc/http?session=00000000-0000-4000-8000-000000000000", pack('H*', $ENV{TEST_NGINX_M1}))
--- error_code: 401
--- response_body_like: "code":"unknown_session"



=== TEST 16: a management session at an app's endpoint
--- http_config eval
$::http_config
--- config eval
$::config
--- raw_request eval
Proven::Test::post_cbor("/app/web/rpc/http?session=$ENV{TEST_NGINX_S1}", pack('H*', $ENV{TEST_NGINX_M1}))
--- error_code: 401
--- response_body_like: not this application's



=== TEST 17: an app's session at its endpoint
--- http_config eval
$::http_config
--- config eval
$::config
--- raw_request eval
Proven::Test::post_cbor("/app/web/rpc/http?session=$ENV{TEST_NGINX_APP_S}", pack('H*', $ENV{TEST_NGINX_APP_M1}))
--- error_code: 200



=== TEST 18: a session id that is no UUID
--- http_config eval
$::http_config
--- config eval
$::config
--- request
POST /rpc/http?session=12345
x
--- error_code: 400
--- response_body_like: must be a session id



=== TEST 19: an empty message
--- http_config eval
$::http_config
--- config eval
$::config
--- request eval
"POST /rpc/http?session=$ENV{TEST_NGINX_S1}\n"
--- error_code: 400
--- response_body_like: "code":"bad_message"



=== TEST 20: a message over proven_rpc_max_message
--- http_config eval
$::http_config
--- config
    location ~ ^/rpc/http$ { proven_rpc; proven_rpc_max_message 100; }
--- request eval
"POST /rpc/http?session=$ENV{TEST_NGINX_S1}\n" . ('x' x 101)
--- error_code: 413
--- response_body_like: "code":"too_large"



=== TEST 21: a message of another type
--- http_config eval
$::http_config
--- config eval
$::config
--- request eval
"POST /rpc/http?session=$ENV{TEST_NGINX_S1}\nx"
--- more_headers
Content-Type: text/plain
--- error_code: 415



=== TEST 22: the WebSocket handshake of a live session
--- http_config eval
$::http_config
--- config eval
$::config
--- raw_request eval
"GET /rpc/ws?session=$ENV{TEST_NGINX_S1} HTTP/1.1\r
Host: localhost\r
Upgrade: websocket\r
Connection: keep-alive, Upgrade\r
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r
Sec-WebSocket-Version: 13\r
\r
\x{88}\x{82}\x{00}\x{00}\x{00}\x{00}\x{03}\x{e8}"
--- error_code: 101
--- response_headers
Upgrade: websocket
Connection: Upgrade
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=
--- response_body eval
"\x{88}\x{16}\x{03}\x{e8}closed by the client"
--- no_error_log
[error]



=== TEST 23: no handshake for an unknown session
--- http_config eval
$::http_config
--- config eval
$::config
--- raw_request eval
"GET /rpc/ws?session=00000000-0000-4000-8000-000000000000 HTTP/1.1\r
Host: localhost\r
Upgrade: websocket\r
Connection: Upgrade, close\r
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r
Sec-WebSocket-Version: 13\r
\r
"
--- error_code: 401
--- response_body_like: "code":"unknown_session"



=== TEST 24: another WebSocket version
--- http_config eval
$::http_config
--- config eval
$::config
--- raw_request eval
"GET /rpc/ws?session=$ENV{TEST_NGINX_S1} HTTP/1.1\r
Host: localhost\r
Upgrade: websocket\r
Connection: Upgrade, close\r
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r
Sec-WebSocket-Version: 8\r
Content-Length: 0\r
\r
"
--- error_code: 426
--- response_headers
Sec-WebSocket-Version: 13



=== TEST 25: a GET without the upgrade
--- http_config eval
$::http_config
--- config eval
$::config
--- request eval
"GET /rpc/ws?session=$ENV{TEST_NGINX_S1}"
--- error_code: 400
--- response_body_like: this is a WebSocket endpoint



=== TEST 26: the WebSocket endpoint takes no POST
--- http_config eval
$::http_config
--- config eval
$::config
--- request eval
"POST /rpc/ws?session=$ENV{TEST_NGINX_S1}\nx"
--- error_code: 405
--- response_headers
Allow: GET



=== TEST 27: other paths under proven_rpc
--- http_config eval
$::http_config
--- config eval
$::config
--- request
POST /other/thing
--- error_code: 404
--- response_body_like: "code":"not_found"



=== TEST 28: proven_rpc needs proven_daemon
--- config
    location = /session { proven_rpc; }
--- must_die
--- error_log
proven_rpc needs proven_daemon
