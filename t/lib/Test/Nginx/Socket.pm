package Test::Nginx::Socket;

# A small Test::Nginx::Socket: the subset of openresty's CPAN harness that
# our suites use (see ../shared/STYLE.md), so `make test` needs nothing from
# CPAN.  The .t files run unchanged under the CPAN module: only `prove -I
# t/lib` makes this one shadow it.
#
# Each block gets a fresh server root, configuration and nginx.  The request
# is built as openresty builds it (a body loses the whitespace at both its
# ends; no $TEST_NGINX_* expansion) and sent over a plain TCP socket, each
# wait bounded by the timeout (3 s by default).  The answer is parsed as HTTP::Response
# and openresty's parser do (a chunked body must end with its last chunk)
# and checked by openresty's rules: response_headers_like is anchored and
# gives way to response_headers, response_body_like is qr/.../s.

use strict;
use warnings;

use Cwd qw(cwd);
use Errno qw(EAGAIN EWOULDBLOCK);
use File::Path qw(make_path remove_tree);
use IO::Select;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);

our $ServerPort;
our $ClientPort;

our @EXPORT = qw(run_tests blocks repeat_each no_shuffle no_long_string
    log_level master_on workers no_root_location timeout plan is like
    unlike ok diag pass fail is_deeply done_testing);

my $RepeatEach = 1;
my $LogLevel   = 'debug';
my $MasterOn   = 0;
my $Workers    = 1;
my $NoRootLocation = 0;
my $Timeout    = $ENV{TEST_NGINX_TIMEOUT} || 3;
my $Sleep      = $ENV{TEST_NGINX_SLEEP} || 0.015;

my %Known = map { $_ => 1 } qw(main_config http_config config request
    raw_request more_headers error_code response_body response_body_like
    response_headers response_headers_like error_log no_error_log must_die
    timeout error_code_like response_body_unlike raw_response_headers_like
    raw_response_headers_unlike ignore_response http09 abort
    raw_request_middle_delay);

sub import {
    my ($class, @args) = @_;
    my $caller = caller;
    no strict 'refs';
    for my $name (@EXPORT) {
        if (defined &{"Test::More::$name"}) {
            *{"${caller}::$name"} = \&{"Test::More::$name"};
        } else {
            *{"${caller}::$name"} = \&{$name};
        }
    }
    if (@args && $args[0] eq 'no_plan') {
        Test::More::plan('no_plan');
    } elsif (@args && $args[0] eq 'tests') {
        Test::More::plan(tests => $args[1]);
    }
}

sub repeat_each    { $RepeatEach = shift if @_; return $RepeatEach }
sub no_shuffle     { }
sub no_long_string { }
sub log_level      { $LogLevel = shift }
sub master_on      { $MasterOn = 1 }
sub workers        { $Workers = shift }
sub no_root_location { $NoRootLocation = 1 }
sub timeout        { $Timeout = shift if @_; return $Timeout }

my $Blocks;

sub blocks {
    $Blocks //= parse_blocks(read_data());
    return @$Blocks;
}

sub read_data {
    open my $fh, '<', $0 or die "cannot read $0: $!";
    local $/;
    my $text = <$fh>;
    close $fh;
    $text =~ s/\A.*?^__DATA__\r?\n//ms or die "$0: no __DATA__ section";
    $text =~ s/^__END__\r?\n.*\z//ms;
    return $text;
}

# Test::Base rules: "=== title" starts a block, "--- name [filters]" a
# section (or "--- name: value" on one line); sections lose the blank lines
# around them; the "eval" filter evaluates the section as Perl; "chomp"
# drops the final newline.
sub parse_blocks {
    my ($text) = @_;
    my @blocks;
    my @chunks = split /^===\s*/m, $text;
    shift @chunks;
    for my $chunk (@chunks) {
        my ($title, $rest) = split /\n/, $chunk, 2;
        $rest //= '';
        my %block = (name => $title);
        my @parts = split /^---[ \t]+/m, $rest;
        shift @parts;
        for my $part (@parts) {
            my ($head, $body) = split /\n/, $part, 2;
            $body //= '';
            my ($name, $value, @filters);
            if ($head =~ /^(\w+)\s*:\s*(.*?)\s*$/) {
                ($name, $value) = ($1, $2);
            } else {
                ($name, @filters) = split ' ', $head;
                $value = $body;
                $value =~ s/\A(?:[ \t]*\n)+//;
                $value =~ s/(?:\n[ \t]*)+\z/\n/;
                $value = '' if $value eq "\n";
            }
            die "$0: block '$title': unknown section '$name'\n"
                unless $Known{$name};
            for my $f (@filters) {
                if ($f eq 'eval') {
                    my @v = eval "package main; $value";
                    die "$0: block '$title': eval of $name failed: $@" if $@;
                    $value = @v == 1 ? $v[0] : \@v;
                } elsif ($f eq 'chomp') {
                    chomp $value;
                } else {
                    die "$0: block '$title': unknown filter '$f'\n";
                }
            }
            $block{$name} = $value;
        }
        push @blocks, \%block;
    }
    return \@blocks;
}

sub env_expand {
    my ($s) = @_;
    return $s unless defined $s && !ref $s;
    $s =~ s/\$(TEST_NGINX_\w+)/
        defined $ENV{$1} ? $ENV{$1} : die "$0: \$$1 is not set\n"/ge;
    return $s;
}

sub settings {
    my $root = $ENV{TEST_NGINX_SERVROOT} // cwd() . '/t/servroot';
    $ENV{TEST_NGINX_SERVER_PORT} //= $ENV{TEST_NGINX_PORT} // 1984;
    $ServerPort = $ClientPort = $ENV{TEST_NGINX_SERVER_PORT};
    $ENV{TEST_NGINX_SERVROOT}    = $root;
    $ENV{TEST_NGINX_SERVER_ROOT} = $root;
    $ENV{TEST_NGINX_HTML_DIR}    = "$root/html";
    return ($root, $ENV{TEST_NGINX_BINARY} // 'nginx');
}

sub write_config {
    my ($root, $block) = @_;
    my $port = $ENV{TEST_NGINX_SERVER_PORT};
    my $modules = '';
    for my $m (split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // '') {
        $modules .= "load_module $m;\n";
    }
    my $main = env_expand($block->{main_config} // '');
    my $http = env_expand($block->{http_config} // '');
    my $loc  = env_expand($block->{config} // '');
    my $root_location = $NoRootLocation ? ''
        : "location / { root $root/html; index index.html; }";
    my $master = $MasterOn ? 'on' : 'off';
    my $conf = <<"CONF";
$modules
worker_processes $Workers;
daemon on;
master_process $master;
error_log $root/logs/error.log $LogLevel;
pid $root/logs/nginx.pid;
$main
events {
    accept_mutex off;
    worker_connections 256;
}
http {
    access_log $root/logs/access.log;
    default_type text/plain;
    keepalive_timeout 68;
    client_body_temp_path $root/client_body_temp;
    proxy_temp_path $root/proxy_temp;
    fastcgi_temp_path $root/fastcgi_temp;
    uwsgi_temp_path $root/uwsgi_temp;
    scgi_temp_path $root/scgi_temp;
$http
    server {
        listen 127.0.0.1:$port;
        server_name localhost;
        client_max_body_size 30M;
$loc
        $root_location
    }
}
CONF
    open my $fh, '>', "$root/conf/nginx.conf" or die "$root: $!";
    print $fh $conf;
    close $fh;
}

sub slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return '';
    local $/;
    my $s = <$fh>;
    close $fh;
    return $s // '';
}

sub nginx_pid {
    my ($root) = @_;
    my $pid = slurp("$root/logs/nginx.pid");
    return $pid =~ /(\d+)/ ? $1 : undef;
}

# A daemonized nginx is reaped by whoever adopted it, maybe late: a zombie
# counts as gone.
sub alive {
    my ($pid) = @_;
    my $stat = slurp("/proc/$pid/stat");
    return 0 if $stat eq '';
    return $stat !~ /^\d+ \(.*\) [ZX]/;
}

sub stop_nginx {
    my ($root) = @_;
    my $pid = nginx_pid($root) or return;
    kill 'TERM', $pid;
    for (1 .. 400) {
        return unless alive($pid);
        sleep 0.01;
    }
    kill 'KILL', $pid;
    sleep 0.05;
}

# Starts nginx; returns (ok, output of the start command).
sub start_nginx {
    my ($root, $nginx) = @_;
    my $out = `$nginx -p $root/ -c $root/conf/nginx.conf 2>&1`;
    return (0, $out) if $? != 0;
    for (1 .. 250) {
        my $pid = nginx_pid($root);
        return (1, $out) if $pid && alive($pid);
        sleep 0.02;
    }
    return (0, $out . "\nno pid file");
}

sub parse_time {
    my ($t) = @_;
    return $t unless defined $t;
    if ($t =~ s/([^_a-zA-Z])ms$/$1/) {
        $t /= 1000;
    } else {
        $t =~ s/([^_a-zA-Z])s$/$1/;
    }
    return $t;
}

sub more_headers {
    my ($text) = @_;
    my ($out, $chunked) = ('', 0);
    for my $line (split /\n+/, $text // '') {
        next if $line =~ /^\s*#/;
        my ($k, $v) = split /:\s*/, $line, 2;
        $v //= '';
        $chunked = 1 if lc $k eq 'transfer-encoding' && $v eq 'chunked';
        $out .= "$k: $v\r\n";
    }
    return ($out, $chunked);
}

# The bytes to send, as a list of writes.
sub build_request {
    my ($block, $name) = @_;
    if (defined $block->{raw_request}) {
        my $raw = $block->{raw_request};
        return ref $raw eq 'ARRAY' ? @$raw : ($raw);
    }
    my $req = $block->{request};
    die "$name - request empty\n" unless defined $req && !ref $req;
    1 while $req =~ s/^\s*\#[^\n]+\s+|^\s+//gs;
    my ($line, $body) = split /\n/, $req, 2;
    $line //= '';
    $body //= '';
    $line =~ /^(\S+) *(?:(\S+) *)?(?:(\S+) *)?\s*$/
        or die "$name - Request line is not valid. Should be"
            . " 'meth [url [version]]' but got \"$line\".\n";
    my ($method, $uri, $version) = ($1, $2 // '/', $3 // 'HTTP/1.1');
    my ($more, $chunked) = more_headers($block->{more_headers});
    my $length = '';
    if (!$chunked && $body ne '' && $more !~ /(?:^|\n)Content-Length:/) {
        $body =~ s/^\s+|\s+$//gs;
        $length = 'Content-Length: ' . length($body) . "\r\n";
    }
    my $head = '';
    $head .= "Host: localhost\r\n" if $more !~ /(?:^|\n)Host:/msi;
    $head .= "Connection: close\r\n" if $more !~ /(?:^|\n)Connection/msi;
    return ("$method $uri $version\r\n$head$more$length\r\n$body");
}

sub connect_server {
    my ($name, $timeout) = @_;
    for my $try (1 .. 20) {
        my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
            PeerPort => $ClientPort, Proto => 'tcp', Timeout => $timeout);
        return $sock if $sock;
        my $wait = ($Sleep + $Sleep * $try) * $try / 2;
        sleep($wait > 1 ? 1 : $wait);
    }
    fail("$name - Can't connect to 127.0.0.1:$ClientPort: $! (aborted)");
    return;
}

# Writes the request and reads until the server closes, each wait on the
# socket bounded by $timeout.  Returns what was read.  A failed write ends
# the exchange, as in openresty.
sub send_request {
    my ($block, $name, $packets, $timeout) = @_;
    my $sock = connect_server($name, $timeout) or return '';
    $sock->blocking(0);
    binmode $sock;
    local $SIG{PIPE} = 'IGNORE';
    my @out = @$packets;
    my $buf = shift(@out) // '';
    my $off = 0;
    my $delay = $block->{raw_request_middle_delay};
    my $resp = '';
    my ($rsel, $wsel) = (IO::Select->new($sock), IO::Select->new($sock));
    while ($rsel->count || $wsel->count) {
        my ($r, $w) = IO::Select->select($rsel->count ? $rsel : undef,
            $wsel->count ? $wsel : undef, undef, $timeout);
        if (!$r && !$w) {
            fail("ERROR: client socket timed out - $name")
                unless defined $block->{abort};
            last;
        }
        if ($r && @$r) {
            my $open = 1;
            while (1) {
                my $n = sysread $sock, my $chunk, 65536;
                if (!defined $n) {
                    last if $! == EAGAIN || $! == EWOULDBLOCK;
                    warn "WARNING: $name - HTTP response read failure: $!\n";
                    $open = 0;
                    last;
                }
                if ($n == 0) {
                    $open = 0;
                    last;
                }
                $resp .= $chunk;
            }
            if (!$open) {
                $rsel->remove($sock);
                $wsel->remove($sock);
            }
        }
        if ($w && @$w && $wsel->count) {
            while (1) {
                if ($off >= length $buf) {
                    if (!@out) {
                        $wsel->remove($sock);
                        last;
                    }
                    sleep $delay if $delay;
                    ($buf, $off) = (shift @out, 0);
                    next;
                }
                my $n = syswrite $sock, $buf, length($buf) - $off, $off;
                if (!defined $n) {
                    last if $! == EAGAIN || $! == EWOULDBLOCK;
                    warn "write failed: $!\n";
                    $resp = "write failed: $!" if $resp eq '';
                    $rsel->remove($sock);
                    $wsel->remove($sock);
                    last;
                }
                $off += $n;
            }
        }
    }
    close $sock;
    return $resp;
}

# What HTTP::Response->parse makes of the bytes: the status code (undef
# unless digits), the header fields in order, the rest as content.
sub parse_http {
    my ($str) = @_;
    my $status;
    if ($str =~ s/^(.*)\n//) {
        $status = $1;
    } else {
        ($status, $str) = ($str, '');
    }
    $status =~ s/\r\z//;
    my @fields;
    while (1) {
        if ($str =~ s/^([^\s:]+)[ \t]*: ?(.*)\n?//) {
            push @fields, [$1, $2];
            $fields[-1][1] =~ s/\r\z//;
        } elsif (@fields && $str =~ s/^([ \t].*)\n?//) {
            $fields[-1][1] .= "\n$1";
            $fields[-1][1] =~ s/\r\z//;
        } else {
            $str =~ s/^\r?\n//;
            last;
        }
    }
    my $code = $status =~ /^\d{3} / ? (split ' ', $status, 2)[0]
        : (split ' ', $status, 3)[1];
    undef $code if defined $code && $code !~ /^\d+$/;
    return { code => $code, fields => \@fields, content => $str };
}

# A header's values (a list), or in scalar context joined by ", " (undef if
# absent), the name compared without case and with _ as -.
sub header {
    my ($res, $key) = @_;
    (my $want = lc $key) =~ tr/_/-/;
    my @v = map { $_->[1] } grep { lc $_->[0] eq $want }
        @{ $res ? $res->{fields} : [] };
    return @v if wantarray;
    return @v ? join(', ', @v) : undef;
}

sub fail_parse {
    my ($msg) = @_;
    fail($msg);
    return;
}

# Returns (response, raw headers, bytes after the response), or nothing
# (after a failure) when a chunked body is malformed or has no last chunk.
sub parse_response {
    my ($name, $raw, $head_req) = @_;
    my $raw_headers = $raw =~ /(.*?\r\n)\r\n/s ? $1 : '';
    my $res = parse_http($raw);
    my $code = $res->{code};
    return ($res, $raw_headers) if $code && ($code == 304 || $code == 101);

    my $te  = header($res, 'Transfer-Encoding');
    my $len = header($res, 'Content-Length');
    my @trailers = header($res, 'Trailer');
    my $left;
    if (defined $te && $te eq 'chunked') {
        my $data = $res->{content};
        my $body = '';
        pos($data) = 0;
        while (1) {
            if (!@trailers && $data =~ /\G0[ \t]*\r\n\r\n/gc) {
                $left = $1 if $data =~ /\G(.+)/gcs;
                last;
            }
            if (@trailers && $data =~ /\G0[ \t]*\r\n/gc) {
                for my $t (@trailers) {
                    $data =~ /\G\Q$t\E: [^\n]*\r\n/gc
                        or return fail_parse("$name - invalid trailer data"
                            . " received (expected $t).");
                }
                $data =~ /\G\r\n/gc
                    or return fail_parse("$name - invalid chunked data"
                        . " received (expected CRLF).");
                $left = $1 if $data =~ /\G(.+)/gcs;
                last;
            }
            if ($data =~ /\G[ \t]*([A-Fa-f0-9]+)[ \t]*\r\n/gc) {
                my $size = hex $1;
                my $at = pos $data;
                return fail_parse("$name - invalid chunked data received"
                    . " (not enought octets for the data section)")
                    if length($data) - $at < $size;
                $body .= substr $data, $at, $size;
                pos($data) = $at + $size;
                $data =~ /\G\r\n/gc
                    or return fail_parse("$name - invalid chunked data"
                        . " received (expected CRLF).");
                next;
            }
            if ($data =~ /\G(.+)/gcs) {
                return fail_parse("$name - invalid chunked body received:"
                    . " $1");
            }
            return fail_parse("$name - no last chunk found - $data");
        }
        $res->{content} = $body;
    } elsif (defined $len && $len ne '' && $len =~ /^\s*\d/ && $len >= 0) {
        my $got = length $res->{content};
        if ($got < $len) {
            warn "WARNING: $name - response body truncated: $len expected,"
                . " but got $got\n" unless $head_req;
        } elsif ($got > $len) {
            $left = substr $res->{content}, $len;
            $res->{content} = substr $res->{content}, 0, $len;
        }
    }
    return ($res, $raw_headers, $left);
}

# A section's value for the block's one request (openresty allows a list
# of one).
sub one {
    my ($v) = @_;
    return ref $v eq 'ARRAY' ? $v->[0] : $v;
}

sub server_ports {
    my ($s) = @_;
    $s =~ s/\$ServerPort\b/$ServerPort/g;
    $s =~ s/\$ServerPortForClient\b/$ClientPort/g;
    return $s;
}

# "Name: value" lines; "!Name" is an absent header (value undef).  A name
# given twice keeps its last line.
sub header_lines {
    my ($text) = @_;
    my (@names, %value);
    for my $line (split /\n/, $text) {
        $line =~ s/^\s+|\s+$//g;
        next if $line eq '';
        my ($key, $val) = $line =~ s/^!\s*// ? ($line, undef)
            : split /\s*:\s*/, $line, 2;
        push @names, $key unless exists $value{$key};
        $value{$key} = $val;
    }
    return map { [$_, $value{$_}] } @names;
}

sub check_response {
    my ($block, $name, $res, $raw_headers, $rep) = @_;
    my $code = ($res && $res->{code}) || '';
    if (defined $block->{error_code_like}) {
        my $re = one($block->{error_code_like});
        like($code, qr/$re/sm, "$name - status code ok");
    } else {
        is($code, one($block->{error_code}) // 200, "$name - status code ok");
    }

    my $raw = $raw_headers // '';
    if (defined $block->{raw_response_headers_like}) {
        my $re = one($block->{raw_response_headers_like});
        like($raw, qr/$re/s, "$name - raw resp headers like");
    }
    if (defined $block->{raw_response_headers_unlike}) {
        my $re = one($block->{raw_response_headers_unlike});
        unlike($raw, qr/$re/s, "$name - raw resp headers unlike");
    }

    if (defined $block->{response_headers}) {
        warn "WARNING: $name - response_headers_like is ignored when"
            . " response_headers is given\n"
            if defined $block->{response_headers_like};
        for my $p (header_lines(one($block->{response_headers}))) {
            my ($key, $want) = @$p;
            if (!defined $want) {
                unlike($raw, qr/^\s*\Q$key\E\s*:/ms,
                    "$name - header $key not present in the raw headers");
                next;
            }
            is(header($res, $key) // '', server_ports($want),
                "$name - header $key ok");
        }
    } elsif (defined $block->{response_headers_like}) {
        for my $p (header_lines(one($block->{response_headers_like}))) {
            my ($key, $re) = @$p;
            $re //= '';
            like(header($res, $key) // '', qr/^$re$/,
                "$name - header $key like ok");
        }
    }

    my $content = $res ? $res->{content} : undef;
    if (defined $block->{response_body}) {
        warn "WARNING: $name - response_body_like is ignored when"
            . " response_body is given\n"
            if defined $block->{response_body_like}
                || defined $block->{response_body_unlike};
        my $want = one($block->{response_body});
        if (ref $want) {
            like($content, $want,
                "$name - response_body - like (repeated req $rep, req 0)");
        } else {
            $want = env_expand(server_ports($want));
            is($content, $want, "$name - response_body - response is"
                . " expected (repeated req $rep, req 0)");
        }
    } elsif (defined $block->{response_body_like}
             || defined $block->{response_body_unlike}) {
        my $like = defined $block->{response_body_like};
        my $re = one($like ? $block->{response_body_like}
                           : $block->{response_body_unlike});
        $re = server_ports($re) unless ref $re;
        my $type = $like ? 'like' : 'unlike';
        my $cmp = $like ? \&like : \&unlike;
        $cmp->($content, qr/$re/s,
            "$name - response_body_$type - response is expected");
    }
}

sub log_lines_check {
    my ($name, $log, $spec, $want) = @_;
    my @items = ref $spec eq 'ARRAY' ? @$spec
        : ref $spec ? ($spec) : grep { /\S/ } split /\n/, $spec;
    for my $item (@items) {
        my $found = ref $item ? $log =~ $item : index($log, $item) >= 0;
        my $what = $want ? 'error_log' : 'no_error_log';
        ok($want ? $found : !$found, "$name - $what: $item");
    }
}

sub run_block {
    my ($block, $root, $nginx) = @_;
    my $name = "$0 - $block->{name}";
    stop_nginx($root);
    remove_tree($root);
    make_path("$root/conf", "$root/logs", "$root/html");
    write_config($root, $block);
    my ($started, $out) = start_nginx($root, $nginx);
    my $log = slurp("$root/logs/error.log") . $out;

    if (exists $block->{must_die}) {
        ok(!$started, "$name - nginx must die");
        stop_nginx($root) if $started;
        $log = slurp("$root/logs/error.log") . $out;
        log_lines_check($name, $log, $block->{error_log}, 1)
            if defined $block->{error_log};
        log_lines_check($name, $log, $block->{no_error_log}, 0)
            if defined $block->{no_error_log};
        return;
    }
    unless ($started) {
        fail("$name - nginx failed to start: $out");
        diag(slurp("$root/logs/error.log"));
        return;
    }

    my @packets = build_request($block, $name);
    my $timeout = parse_time($block->{timeout}) // $Timeout;
    my $raw = send_request($block, $name, \@packets, $timeout);
    my $req = join '', @packets;
    unless (defined $block->{ignore_response}) {
        my ($res, $raw_headers, $left);
        if (defined $block->{http09}) {
            ($res, $raw_headers) = ({ code => 200, fields => [],
                content => $raw }, '');
        } else {
            ($res, $raw_headers, $left) = parse_response($name, $raw,
                $req =~ /^\s*HEAD\s+/ ? 1 : 0);
        }
        if ($left) {
            (my $l = $left) =~ s/([\0-\037\200-\377])/sprintf('\x{%02x}',
                ord $1)/eg;
            warn "WARNING: $name - unexpected extra bytes after last chunk"
                . " in response: \"$l\"\n";
        }
        check_response($block, $name, $res, $raw_headers, 0);
    }

    # Give the worker a moment to write log lines caused by the request.
    sleep 0.05;
    stop_nginx($root);
    $log = slurp("$root/logs/error.log");
    log_lines_check($name, $log, $block->{error_log}, 1)
        if defined $block->{error_log};
    log_lines_check($name, $log, $block->{no_error_log}, 0)
        if defined $block->{no_error_log};
    ok($log !~ /AddressSanitizer|runtime error:|LeakSanitizer|on signal \d+/,
        "$name - no sanitizer report or crash in the error log")
        or diag($log =~ /((?:AddressSanitizer|runtime error:|LeakSanitizer|on signal).{0,2000})/s);
}

sub run_tests {
    my ($root, $nginx) = settings();
    for my $block (blocks()) {
        run_block($block, $root, $nginx) for 1 .. $RepeatEach;
    }
    stop_nginx($root);
}

1;
