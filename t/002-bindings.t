# The TLS certificate binding and the X-Request-Attestation header.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use Proven::Test;

log_level('info');
no_shuffle();
run_tests();

__DATA__

=== TEST 1: bind_tls puts the served certificate's key in public_key, and marks it in user_data
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
    server {
        listen 127.0.0.1:$TEST_NGINX_TLS_PORT ssl;
        ssl_certificate $TEST_NGINX_TLS_CERT;
        ssl_certificate_key $TEST_NGINX_TLS_KEY;
        location = /attestation {
            proven_attestation;
            proven_attestation_bind_tls on;
        }
    }
--- config
    location = /t {
        proxy_pass https://127.0.0.1:$TEST_NGINX_TLS_PORT/attestation?nonce=00ff&format=json;
    }
--- request
GET /t
--- response_body_like eval
qr/"public_key":\s*"\Q$ENV{TEST_NGINX_TLS_SPKI}\E",\s*"user_data":\s*"cHJvdmVuLXRscy1iaW5kaW5nLXYx",\s*"nonce":\s*"AP8="/s
--- no_error_log
[error]



=== TEST 2: bind_tls refuses a client-supplied public_key
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
    server {
        listen 127.0.0.1:$TEST_NGINX_TLS_PORT ssl;
        ssl_certificate $TEST_NGINX_TLS_CERT;
        ssl_certificate_key $TEST_NGINX_TLS_KEY;
        location = /attestation {
            proven_attestation;
            proven_attestation_bind_tls on;
        }
    }
--- config
    location = /t {
        proxy_pass https://127.0.0.1:$TEST_NGINX_TLS_PORT/attestation?nonce=00&public_key=AAAA;
    }
--- request
GET /t
--- error_code: 400
--- response_body_like eval
qr/"code":\s*"bad_request".*"message":\s*"public_key/
--- no_error_log
[error]



=== TEST 3: bind_tls over plain HTTP is refused
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /attestation {
        proven_attestation;
        proven_attestation_bind_tls on;
    }
--- request
GET /attestation?nonce=00
--- error_code: 400
--- response_body_like eval
qr/"code":\s*"tls_required"/
--- no_error_log
[error]



=== TEST 4: X-Request-Attestation adds X-Attestation to any response
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /gif {
        proven_attestation_header on;
        empty_gif;
    }
--- request
GET /gif
--- more_headers
X-Request-Attestation: 00ff
--- response_headers_like
Content-Type: image/gif
X-Attestation: ^hEShATgi[A-Za-z0-9+/]+=*$
--- no_error_log
[error]



=== TEST 5: without the request header nothing is added
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /gif {
        proven_attestation_header on;
        empty_gif;
    }
--- request
GET /gif
--- response_headers
!X-Attestation
Content-Type: image/gif
--- no_error_log
[error]



=== TEST 6: a bad X-Request-Attestation is a 400
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /gif {
        proven_attestation_header on;
        empty_gif;
    }
--- request
GET /gif
--- more_headers
X-Request-Attestation: not-hex
--- error_code: 400
--- response_body_like eval
qr/"message":\s*"X-Request-Attestation/
--- no_error_log
[error]



=== TEST 7: the header is ignored where the feature is off
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /gif {
        empty_gif;
    }
--- request
GET /gif
--- more_headers
X-Request-Attestation: 00ff
--- response_headers
!X-Attestation
--- no_error_log
[error]



=== TEST 8: provend down with the header: 503
--- http_config
    proven_daemon unix:$TEST_NGINX_DEAD_SOCKET;
--- config
    location = /gif {
        proven_attestation_header on;
        empty_gif;
    }
--- request
GET /gif
--- more_headers
X-Request-Attestation: 00ff
--- error_code: 503
--- timeout: 3
--- error_log
proven daemon:



=== TEST 9: the header works with return, which answers in the rewrite phase
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /hello {
        proven_attestation_header on;
        return 200 "hello\n";
    }
--- request
GET /hello
--- more_headers
X-Request-Attestation: 00ff
--- response_headers_like
X-Attestation: ^hEShATgi[A-Za-z0-9+/]+=*$
--- response_body
hello
--- no_error_log
[error]



=== TEST 10: the document survives an internal redirect, and is not cached
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location /r {
        proven_attestation_header on;
        try_files /nonexistent /hello;
    }
    location = /hello {
        return 200 "hello\n";
    }
--- request
GET /r
--- more_headers
X-Request-Attestation: 00ff
--- response_headers_like
X-Attestation: ^hEShATgi[A-Za-z0-9+/]+=*$
Cache-Control: ^private, no-store$
--- response_body
hello
--- no_error_log
[error]



=== TEST 11: the TLS binding's mark is refused from a caller
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
--- config
    location = /attestation { proven_attestation; }
--- request
GET /attestation?nonce=00ff&user_data=cHJvdmVuLXRscy1iaW5kaW5nLXYx&public_key=AAAA
--- error_code: 400
--- response_body_like: user_data: reserved: \\"proven-\\" marks



=== TEST 12: bind_tls refuses a client-supplied user_data
--- http_config
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
    server {
        listen 127.0.0.1:$TEST_NGINX_TLS_PORT ssl;
        ssl_certificate $TEST_NGINX_TLS_CERT;
        ssl_certificate_key $TEST_NGINX_TLS_KEY;
        location = /attestation {
            proven_attestation;
            proven_attestation_bind_tls on;
        }
    }
--- config
    location = /t {
        proxy_pass https://127.0.0.1:$TEST_NGINX_TLS_PORT/attestation?nonce=00ff&user_data=AAAA;
    }
--- request
GET /t
--- error_code: 400
--- response_body_like: it marks the TLS binding
