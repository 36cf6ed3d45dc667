# GET /attestation: documents, the JSON view, and every bad input.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use Proven::Test;

log_level('info');
no_shuffle();
run_tests();

__DATA__

=== TEST 1: a document with the client's nonce, as CBOR
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /attestation { proven_attestation; }
--- request
GET /attestation?nonce=00ff
--- response_headers
Content-Type: application/cbor
--- response_body_like eval
qr/\A\x84\x44\xa1\x01\x38\x22.*enonce\x42\x00\xff/s
--- no_error_log
[error]



=== TEST 2: the JSON view for people
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /attestation { proven_attestation; }
--- request
GET /attestation?nonce=00ff&format=json
--- response_headers
Content-Type: application/json
--- response_body_like eval
qr/"module_id":\s*"proven-dev-[0-9a-f]{32}".*"nonce":\s*"AP8="/s
--- no_error_log
[error]



=== TEST 3: Accept: application/json also gives the JSON view
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /attestation { proven_attestation; }
--- request
GET /attestation?nonce=0102
--- more_headers
Accept: application/json
--- response_headers
Content-Type: application/json
--- response_body_like eval
qr/"pcrs":\s*\{\s*"0":\s*"[0-9a-f]{96}".*"nonce":\s*"AQI="/s
--- no_error_log
[error]



=== TEST 4: user_data and public_key in base64url, with or without padding
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /attestation { proven_attestation; }
--- request
GET /attestation?user_data=aGVsbG8&public_key=-_8=&format=json
--- response_body_like eval
qr/"public_key":\s*"\+\/8=".*"user_data":\s*"aGVsbG8="/s
--- no_error_log
[error]



=== TEST 5: no nonce: the fields are null
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /attestation { proven_attestation; }
--- request
GET /attestation?format=json
--- response_body_like eval
qr/"nonce":\s*null/
--- no_error_log
[error]



=== TEST 6: a 1024-byte nonce is the largest accepted
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /attestation { proven_attestation; }
--- request eval
"GET /attestation?format=json&nonce=" . ("ab" x 1024)
--- response_body_like eval
qr/"nonce":\s*"(?:q6ur){341}qw=="/
--- no_error_log
[error]



=== TEST 7: a 1025-byte nonce is refused
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /attestation { proven_attestation; }
--- request eval
"GET /attestation?nonce=" . ("ab" x 1025)
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body_like eval
qr/\A\{"error":\s*\{"code":\s*"bad_request",\s*"message":\s*"nonce[^"]*"\}\}/
--- no_error_log
[error]



=== TEST 8: a nonce that is not hex
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /attestation { proven_attestation; }
--- request
GET /attestation?nonce=zz
--- error_code: 400
--- response_body_like eval
qr/"code":\s*"bad_request".*"message":\s*"nonce[^"]*hex/
--- no_error_log
[error]



=== TEST 9: a nonce of odd length
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /attestation { proven_attestation; }
--- request
GET /attestation?nonce=abc
--- error_code: 400
--- response_body_like eval
qr/"message":\s*"nonce/
--- no_error_log
[error]



=== TEST 10: a parameter given twice
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /attestation { proven_attestation; }
--- request
GET /attestation?nonce=00&nonce=01
--- error_code: 400
--- response_body_like eval
qr/"message":\s*"nonce[^"]*(?:twice|duplicate|more than once)/
--- no_error_log
[error]



=== TEST 11: user_data that is not base64url
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /attestation { proven_attestation; }
--- request
GET /attestation?user_data=a$b
--- error_code: 400
--- response_body_like eval
qr/"message":\s*"user_data/
--- no_error_log
[error]



=== TEST 12: a public_key over 1024 bytes
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /attestation { proven_attestation; }
--- request eval
"GET /attestation?public_key=" . ("AAAA" x 342)
--- error_code: 400
--- response_body_like eval
qr/"message":\s*"public_key/
--- no_error_log
[error]



=== TEST 13: an unknown format
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /attestation { proven_attestation; }
--- request
GET /attestation?format=xml
--- error_code: 400
--- response_body_like eval
qr/"message":\s*"format/
--- no_error_log
[error]



=== TEST 14: other methods are not allowed
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /attestation { proven_attestation; }
--- request
POST /attestation?nonce=00
hello
--- error_code: 405
--- response_headers
Allow: GET, HEAD
--- response_body_like eval
qr/"code":\s*"method_not_allowed"/
--- no_error_log
[error]



=== TEST 15: HEAD answers headers only
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /attestation { proven_attestation; }
--- request
HEAD /attestation?nonce=00
--- response_headers
Content-Type: application/cbor
--- response_body
--- no_error_log
[error]



=== TEST 16: provend down: 503 and one error line, quickly
--- http_config
    proven_daemon unix:$TEST_NGINX_DEAD_SOCKET;
--- config
    location = /attestation { proven_attestation; }
--- request
GET /attestation?nonce=00
--- error_code: 503
--- response_body_like eval
qr/"code":\s*"daemon_unavailable"/
--- timeout: 3
--- error_log
proven daemon:



=== TEST 17: provend that never answers: 503 after the timeout
--- http_config
    proven_daemon unix:$TEST_NGINX_SILENT_SOCKET timeout=300ms;
--- config
    location = /attestation { proven_attestation; }
--- request
GET /attestation?nonce=00
--- error_code: 503
--- response_body_like eval
qr/"code":\s*"daemon_unavailable"/
--- timeout: 3
--- error_log
no answer from



=== TEST 18: proven_attestation without proven_daemon does not start
--- config
    location = /attestation { proven_attestation; }
--- must_die
--- error_log
no proven_daemon configured



=== TEST 19: proven_daemon needs a unix: address
--- http_config
    proven_daemon 127.0.0.1:9;
--- config
    location = /attestation { proven_attestation; }
--- must_die
--- error_log
is not a unix: socket



=== TEST 20: a bad timeout does not start
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET timeout=soon;
--- config
    location = /attestation { proven_attestation; }
--- must_die
--- error_log
timeout



=== TEST 21: proven_attestation takes no arguments
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /attestation { proven_attestation yes; }
--- must_die
--- error_log
invalid number of arguments
