# HTTP triggers of deployed applications (ngx_http_proven_app_module): the
# app t/apps/web is deployed once through provend and the CLI, then each
# test is a request through nginx to its worker.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use Proven::Test;

my $bin = $ENV{TEST_NGINX_PROVEN_BIN};
Proven::Test::deploy_app('web', "$FindBin::Bin/apps/web");
$ENV{TEST_NGINX_WEB_PACKAGE} = `$bin/proven app pack $FindBin::Bin/apps/web`;
chomp $ENV{TEST_NGINX_WEB_PACKAGE};
$ENV{TEST_NGINX_WEB_PACKAGE} =~ /^[0-9a-f]{64}$/
    or die "proven app pack printed no id";

our $http_config = <<'CONF';
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
    proven_app_state $TEST_NGINX_PROVEN_DATA/run/state;
CONF

log_level('info');
no_shuffle();
run_tests();

__DATA__

=== TEST 1: path and query parameters reach the handler
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; }
--- request
GET /app/web/items/a%20b%2525?x=1&x=2&y=3
--- response_headers
Content-Type: application/json
--- response_body chomp
{"id":"a b%25","query":{"x":["1","2"],"y":"3"}}
--- no_error_log
[error]



=== TEST 2: a root route takes the app's own root
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; }
--- request
GET /app/web/
--- response_body chomp
"root"
--- no_error_log
[error]



=== TEST 3: a JSON body in, the handler's status and headers out
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; }
--- request
POST /app/web/items
{"n":1}
--- more_headers
Content-Type: application/json
X-Name: ada
--- error_code: 201
--- response_headers
X-Created: ADA!
--- response_body chomp
{"received":"{\"n\":1}"}
--- no_error_log
[error]



=== TEST 4: a binary body comes back as it went
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; }
--- request eval
"PUT /app/web/echo\n\x00\x01\xfe\xff"
--- response_headers
Content-Type: application/octet-stream
--- response_body eval
"\x00\x01\xfe\xff"
--- no_error_log
[error]



=== TEST 5: proven_app NAME serves one app at a location
--- http_config eval
$::http_config
--- config
    location /one/ { proven_app web; }
--- request
GET /one/text
--- response_headers
Content-Type: text/plain; charset=utf-8
--- response_body chomp
plain
--- no_error_log
[error]



=== TEST 6: an unknown application is 404 JSON
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; }
--- request
GET /app/nothing-here/items/1
--- error_code: 404
--- response_body
{"error":{"code":"app_not_found","message":"no application \"nothing-here\" is deployed here"}}
--- no_error_log
[error]



=== TEST 7: an unknown route is 404
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; }
--- request
GET /app/web/nowhere
--- error_code: 404
--- response_body_like: "code":"route_not_found"
--- no_error_log
[error]



=== TEST 8: a method the route does not take is 405 with Allow
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; }
--- request
DELETE /app/web/items
--- error_code: 405
--- response_headers
Allow: POST
--- response_body_like: "code":"method_not_allowed"
--- no_error_log
[error]



=== TEST 9: a body over proven_app_max_body is 413
--- http_config eval
$::http_config
--- config
    location /app/ {
        proven_app;
        proven_app_max_body 8;
    }
--- request
POST /app/web/items
0123456789
--- error_code: 413
--- response_body_like: "code":"body_too_large"
--- no_error_log
[error]



=== TEST 10: a handler that throws is 500 with an error id and, in local mode, the message
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; }
--- request
GET /app/web/fails
--- error_code: 500
--- response_body_like: ^\{"error":\{"code":"handler_error","message":"Error: the handler broke","error_id":"[0-9a-f]{16}"\}\}$
--- error_log
proven app: handler error
--- no_error_log
[error]



=== TEST 11: a handler past its timeout is 504
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; }
--- request
GET /app/web/slow
--- error_code: 504
--- response_body_like: "code":"timeout"
--- no_error_log
[error]



=== TEST 12: nginx's own proven_app_timeout is 504 too
--- http_config eval
$::http_config
--- config
    location /app/ {
        proven_app;
        proven_app_timeout 100ms;
    }
--- request
GET /app/web/slow
--- error_code: 504
--- response_body_like: "code":"timeout"
--- error_log
proven app: no answer from



=== TEST 13: a call that exhausts the worker's memory is 502
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; }
--- request
GET /app/web/hog
--- error_code: 502
--- response_body_like: "code":"worker_unavailable"
--- timeout: 20



=== TEST 14: the next call is served by a fresh isolate
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; }
--- request
GET /app/web/text
--- response_body chomp
plain
--- no_error_log
[error]



=== TEST 15: response headers that could split or confuse the response are dropped
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; }
--- request
GET /app/web/bad-headers
--- response_headers
X-Ok: yes
!X-Bad
!Transfer-Encoding
--- response_body chomp
headers filtered
--- error_log
a response header was dropped



=== TEST 15a: on an origin apps share, cookies and service worker scope are dropped, the answer sandboxed
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; proven_app_shared_origin on; }
--- request
GET /app/web/reaching
--- response_headers
X-Ok: yes
Content-Security-Policy: sandbox
!Set-Cookie
!Service-Worker-Allowed
--- response_body chomp
reaching
--- error_log
a response header was dropped



=== TEST 15b: on an app's own origin (its name from the Host) they are its own
--- http_config eval
$::http_config
--- config
    location /own/ { proven_app $arg_app; }
--- request
GET /own/reaching?app=web
--- response_headers
X-Ok: yes
Set-Cookie: session=app; Path=/
Service-Worker-Allowed: /
!Content-Security-Policy
--- response_body chomp
reaching
--- no_error_log
[error]



=== TEST 15c: a name from a variable that is no app name is a 404
--- http_config eval
$::http_config
--- config
    location /own/ { proven_app $arg_app; }
--- request
GET /own/reaching?app=Bad..Name
--- error_code: 404
--- response_body_like: "code":"app_not_found"



=== TEST 16: the audit log is public JSON; its package id is what pack prints
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; }
--- request
GET /app/web/audit
--- response_headers
Content-Type: application/json
--- response_body_like eval
qr/^\{"app":"web","entries":\[\{"seq":1,"time":\d+,"action":"deploy","package":"$ENV{TEST_NGINX_WEB_PACKAGE}","signer":"[0-9a-f]{64}","prev":"0{64}","hash":"[0-9a-f]{64}","signature":"[0-9a-f]{128}","cbor":"[0-9a-f]+"\}\]\}$/
--- no_error_log
[error]



=== TEST 17: the audit log of an unknown app is 404
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; }
--- request
GET /app/ghost/audit
--- error_code: 404
--- response_body_like: "code":"app_not_found"
--- no_error_log
[error]



=== TEST 18: HEAD takes a GET route and sends no body
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; }
--- request
HEAD /app/web/text
--- response_headers
Content-Length: 5
--- response_body
--- no_error_log
[error]



=== TEST 19: without a state page every app is unknown
--- http_config
    proven_app_state /nonexistent/state;
--- config
    location /app/ { proven_app; }
--- request
GET /app/web/text
--- error_code: 404
--- response_body_like: "code":"app_not_found"
--- no_error_log
[error]



=== TEST 20: a bad application name in the configuration is refused
--- http_config eval
$::http_config
--- config
    location / { proven_app _node; }
--- must_die
--- error_log
is not an application name



=== TEST 21: a streamed body goes out chunked, as the handler yields it
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; }
--- request
GET /app/web/stream/3
--- response_headers
Transfer-Encoding: chunked
Content-Type: text/plain
--- response_body
0
1
2
--- no_error_log
[error]



=== TEST 22: a long stream: a thousand chunks, in order
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; }
--- request
GET /app/web/stream/1000
--- response_body eval
join '', map { "$_\n" } 0 .. 999
--- no_error_log
[error]



=== TEST 23: a stream that breaks cuts the response, and the log says why
A chunked body without its last chunk is no response to Test::Nginx's
parser: http09 hands the bytes over unparsed.
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; }
--- request
GET /app/web/stream-breaks
--- http09
--- response_body_like eval
qr{\AHTTP/1\.1 200 OK\r\n(?:[^\r\n]+\r\n)*Transfer-Encoding: chunked\r\n(?:[^\r\n]+\r\n)*\r\n4\r\none\n\r\n\z}
--- error_log
the streamed body of "web" broke: Error: broke mid-stream



=== TEST 24: HEAD of a streamed body is its head only
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; }
--- request
HEAD /app/web/stream/3
--- response_headers
Content-Type: text/plain
--- response_body
--- no_error_log
[error]



=== TEST 25: a stream under limit_rate flows at that rate and ends
--- http_config eval
$::http_config
--- config
    location /app/ { proven_app; limit_rate 64k; send_timeout 10s; }
--- request
GET /app/web/stream-big/3
--- timeout: 15
--- response_body eval
'x' x (3 * 65536)
--- no_error_log
[error]
