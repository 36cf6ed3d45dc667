# Sessions under a node's limits (provend --session-origins listed
# --session-idle 1): an app's session from an origin the app did not allow,
# and a session used after its idle time.

use Test::Nginx::Socket 'no_plan';
use FindBin;
use lib "$FindBin::Bin/lib";
use Proven::Test provend_args => ['--session-origins', 'listed',
                                  '--session-idle', '1'];
use Time::HiRes qw(sleep);

Proven::Test::deploy_app('web', "$FindBin::Bin/apps/web");

# a management session and its first message, then its idle time passes
for (`node $FindBin::Bin/lib/rpc-forge.mjs $ENV{TEST_NGINX_PROVEN_SOCKET} management`) {
    chomp;
    my ($k, $v) = split /=/, $_, 2;
    $ENV{"TEST_NGINX_$k"} = $v;
}
$ENV{TEST_NGINX_M1} or die "rpc-forge.mjs printed nothing";
sleep 2.5;

# (the key: RFC 8032's first test key, a point anyone may hold; one of
# small order is refused)
our $cbor_session = pack('H*', 'a2656e6f6e63654201026a7075626c69635f6b65795820'
                               . 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a');

our $http_config = <<'CONF';
    proven_daemon unix:$TEST_NGINX_PROVEN_SOCKET;
CONF

our $config = <<'CONF';
    location = /session { proven_rpc; }
    location ~ ^/app/[^/]+/session$ { proven_rpc; }
    location ~ ^/(app/[^/]+/)?rpc/(http|ws)$ { proven_rpc; }
CONF

log_level('info');
no_shuffle();
run_tests();

__DATA__

=== TEST 1: an origin the app did not allow
--- http_config eval
$::http_config
--- config eval
$::config
--- request eval
"POST /app/web/session\n$::cbor_session"
--- more_headers
Content-Type: application/cbor
Origin: https://elsewhere.example
--- error_code: 403
--- response_body_like: "code":"forbidden".*not allowed



=== TEST 2: a session past its idle time is gone
--- http_config eval
$::http_config
--- config eval
$::config
--- raw_request eval
Proven::Test::post_cbor("/rpc/http?session=$ENV{TEST_NGINX_S1}", pack('H*', $ENV{TEST_NGINX_M1}))
--- error_code: 401
--- response_body_like: "code":"unknown_session".*(expired|no such session)



=== TEST 3: a management session still opens
--- http_config eval
$::http_config
--- config eval
$::config
--- request eval
"POST /session\n$::cbor_session"
--- more_headers
Content-Type: application/cbor
--- error_code: 200
