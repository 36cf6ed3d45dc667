# Self-test of t/lib's Test::Nginx::Socket: each rule it shares with
# openresty's harness, checked on canned blocks, requests and responses
# (no nginx).  Run: prove t/lib/harness.t

use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use Test::More;
use Test2::API qw(intercept);
require Test::Nginx::Socket;

my $H = 'Test::Nginx::Socket';

# The verdicts (1 pass, 0 fail) of the checks $code makes, and its warnings.
sub verdicts {
    my ($code) = @_;
    my @warnings;
    local $SIG{__WARN__} = sub { push @warnings, $_[0] };
    my $events = intercept { $code->() };
    my @v = map { $_->causes_fail ? 0 : 1 }
        grep { $_->isa('Test2::Event::Ok') } @$events;
    return wantarray ? (\@v, \@warnings) : \@v;
}

sub spec { Test::Nginx::Socket::parse_spec($_[0], 'spec') }

sub response {
    my ($raw) = @_;
    my @r;
    my $v = verdicts(sub { @r = Test::Nginx::Socket::parse_response('t',
        $raw, 0) });
    return ($v, @r);
}

sub check {
    my ($block, $raw) = @_;
    my (undef, $res, $raw_headers) = response($raw);
    return scalar verdicts(sub {
        Test::Nginx::Socket::check_response($block, 't', $res, $raw_headers,
            0) });
}

sub request {
    my ($block) = @_;
    return join '|', Test::Nginx::Socket::build_request($block, 't');
}

# ---- blocks (Test::Base) ----

my $b = spec(<<'SPEC')->[0];
=== TEST 1: title
a description
--- request
  x
y  

--- error_code: 404  
--- response_body chomp
last
--- error_log eval
"first", "second"
--- more_headers


--- raw_request
__END__
tail



SPEC
is($b->{title}, 'TEST 1: title', 'the title is the rest of the line');
is($b->{request}, "  x\ny  \n", 'a section keeps inner spaces, loses'
    . ' trailing blank lines');
is($b->{error_code}, '404', 'a one-line section is trimmed');
is($b->{response_body}, 'last', 'chomp drops the last newline');
is($b->{error_log}, 'first', 'eval keeps the first value returned');
is($b->{more_headers}, '', 'an empty section is defined and empty');
is($b->{raw_request}, "__END__\ntail\n", '__END__ is data after __DATA__');

our $visible = 'main';
is(spec("=== T\n--- request eval\n\$::visible\n")->[0]{request}, 'main',
    'eval sees $::names');
ok(!eval { spec("=== T\n--- request eval\n\$visible\n"); 1 },
    'eval code is not in package main');
like((eval { spec("=== T\n--- request_body\nx\n") } // $@),
    qr/not implemented/, 'a section not implemented stops the suite');
is(scalar @{ spec("=== A\n--- SKIP\n=== B\n--- config\n") }, 1,
    'SKIP drops its block');
is(spec("=== A\n=== B\n--- ONLY\n=== C\n")->[0]{title}, 'B',
    'ONLY keeps its block alone');

# ---- requests ----

is(request({ request => "POST /t\n  hello  \n" }),
    "POST /t HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    . "Content-Length: 5\r\n\r\nhello",
    'a body loses the whitespace at both ends and gets a Content-Length');
is(request({ request => "POST /t\n" }),
    "POST /t HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    'an empty body gets no Content-Length');
is(request({ request => "# a comment\n  GET\n" }),
    "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    'comments before the request line go; the URI defaults to /');
is(request({ request => "GET /t HTTP/1.0\n",
             more_headers => "Host: x\n# no\nconnection:keep-alive\nX-A:1\n" }),
    "GET /t HTTP/1.0\r\nHost: x\r\nconnection: keep-alive\r\nX-A: 1\r\n\r\n",
    'more_headers replace Host and Connection and become "Name: value"');
is(request({ request => "POST /t\n x \n",
             more_headers => "Content-Length: 3\n" }),
    "POST /t HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    . "Content-Length: 3\r\n\r\n x \n",
    'a Content-Length in more_headers keeps the body as it is');
is(request({ request => "GET /t?p=\$TEST_NGINX_SERVER_PORT\n" }),
    "GET /t?p=\$TEST_NGINX_SERVER_PORT HTTP/1.1\r\nHost: localhost\r\n"
    . "Connection: close\r\n\r\n", 'a request is not expanded');
is(request({ raw_request => ["GE", "T /\r\n\r\n"] }), "GE|T /\r\n\r\n",
    'a raw_request list is a list of writes');
ok(!eval { request({ request => "GET /a b c d\n" }); 1 },
    'a bad request line stops the suite');

is(Test::Nginx::Socket::parse_time('50ms'), 0.05, 'a timeout in ms');
is(Test::Nginx::Socket::parse_time('2s'), 2, 'a timeout in s');

# ---- responses ----

my $head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
my ($v, $res) = response("${head}4\r\none\n\r\n0\r\n\r\n");
is_deeply([$v, $res->{code}, $res->{content}], [[], 200, "one\n"],
    'a chunked body is decoded');
($v, $res) = response("${head}4\r\none\n\r\n");
is_deeply([$v, $res], [[0], undef],
    'a chunked body without its last chunk fails and is no response');
($v, $res) = response("${head}4\r\none\nXX");
is_deeply([$v, $res], [[0], undef], 'a chunk without its CRLF fails');
($v, $res) = response("${head}zz\r\n");
is_deeply([$v, $res], [[0], undef], 'a bad chunk size fails');
($v, $res) = response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
    . "Trailer: X-T\r\n\r\n1\r\na\r\n0\r\nX-T: 1\r\n\r\n");
is_deeply([$v, $res->{content}], [[], 'a'], 'trailers are read');
my (undef, $r2, $rh, $left) = response("HTTP/1.1 200 OK\r\n"
    . "Content-Length: 2\r\n\r\nabcd");
is_deeply([$r2->{content}, $left, $rh],
    ['ab', 'cd', "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"],
    'a body is cut at its Content-Length');
(undef, $r2) = response("HTTP/1.1 101 Switching\r\nContent-Length: 0\r\n"
    . "\r\n\x88\x00");
is($r2->{content}, "\x88\x00", 'a 101 keeps the bytes after its head');
(undef, $r2) = response("garbage\r\n\r\n");
is($r2->{code}, undef, 'no status code without a status line');
(undef, $r2) = response("HTTP/1.1 200 OK\r\nX-A:  1 \r\nx-a: 2\r\n"
    . "X-B: y\r\n z\r\n\r\n");
is(Test::Nginx::Socket::header($r2, 'X_A'), ' 1 , 2',
    'repeated headers are joined, _ is -, one space after : is dropped');
is(Test::Nginx::Socket::header($r2, 'X-B'), "y\n z",
    'a folded header keeps its line');

# ---- checks ----

my $allow = "HTTP/1.1 405 Not Allowed\r\nAllow: GET, HEAD\r\n"
    . "Content-Length: 5\r\n\r\nhello";
is_deeply(check({ error_code => 405,
                  response_headers_like => "Allow: GET\n" }, $allow),
    [1, 0], 'response_headers_like is anchored');
is_deeply(check({ error_code => 405,
                  response_headers_like => "Allow: GET.*\nX-No: \n" },
                $allow),
    [1, 1, 1], 'a pattern for all of the value matches; absent is ""');
is_deeply(check({ error_code => 405, response_headers => "Allow: GET, HEAD\n",
                  response_headers_like => "Allow: nothing\n" }, $allow),
    [1, 1], 'response_headers_like is ignored beside response_headers');
is_deeply(check({ error_code => 405,
                  response_headers => "!X-Foo\n!allow\n!Allow\nX-Bar:\n" },
                $allow),
    [1, 1, 1, 0, 1],
    '!Name looks for the name as written in the raw headers');
is_deeply(check({ error_code => 405,
                  response_headers => "Allow: x\nAllow: GET, HEAD\n" }, $allow),
    [1, 1], 'a name given twice keeps its last line');
is_deeply(check({ error_code => 405, response_body => "hello\n" }, $allow),
    [1, 0], 'response_body is exact, newline included');
is_deeply(check({ error_code => 405, response_body => qr/^hel/ }, $allow),
    [1, 1], 'an eval\'d qr// response_body is matched');
is_deeply(check({ error_code => 405, response_body_like => 'l' }, $allow),
    [1, 1], 'response_body_like is not anchored');
is_deeply(check({ error_code => 405, response_body_like => '^l' }, $allow),
    [1, 0], 'response_body_like anchors only where it says');
my $two = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\na\nb";
is_deeply(check({ response_body_like => 'a.b' }, $two), [1, 1],
    'response_body_like has /s');
is_deeply(check({ response_body_like => '^b' }, $two), [1, 0],
    'response_body_like has no /m');
is_deeply(check({ response_body => "a\nb", response_body_like => 'x' },
                $two),
    [1, 1], 'response_body_like is ignored beside response_body');
is_deeply(check({ error_code_like => '^(?:200|204)$' }, $two), [1],
    'error_code_like');
is_deeply(check({ response_body => '' }, "${head}1\r\na\r\n"), [0, 0],
    'no response: no status, no body');

# ---- logs ----

my @log = ("2026/01/01 [info] 1#1: first line\n",
           "2026/01/01 [error] 1#1: second line\n",
           "2026/01/01 [error] 1#1: third line\n");
sub logs {
    my ($want, $spec) = @_;
    return scalar verdicts(sub { Test::Nginx::Socket::check_log_patterns('t',
        \@log, 'error.log', $want, $spec, 0) });
}
is_deeply(logs(1, "first line\n[error]\n"), [1, 1],
    'error_log: each line of the section is a substring to find');
is_deeply(logs(1, qr/^2026\S+ \[error\]/), [1],
    'error_log: a qr// is tried on each line');
is_deeply(logs(1, qr/first line\n2026/), [0],
    'error_log: a pattern does not span lines');
is_deeply(logs(1, [qr/third/, 'nowhere']), [1, 0],
    'error_log: a list of patterns, each needed');
is_deeply(logs(0, "[error]\n[crit]\n"), [0, 0, 1],
    'no_error_log: each matching line fails');

done_testing();
