package Test::Nginx::Socket;

# A small Test::Nginx::Socket: the subset of openresty's CPAN harness that
# our suites use (see ../shared/STYLE.md), so `make test` needs nothing from
# CPAN.  The .t files run unchanged under the CPAN module: only `prove -I
# t/lib` makes this one shadow it.
#
# Each block gets a fresh server root, configuration and nginx; the request
# is sent over a plain TCP socket.  The answer is parsed as HTTP::Response
# and openresty's parser do (a chunked body must end with its last chunk)
# and checked by openresty's rules: response_headers_like is anchored and
# gives way to response_headers, response_body_like is qr/.../s.

use strict;
use warnings;

use Cwd qw(cwd);
use File::Path qw(make_path remove_tree);
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);

our $ServerPort;
our $ClientPort;

our @EXPORT = qw(run_tests blocks repeat_each no_shuffle no_long_string
    log_level master_on workers no_root_location plan is like unlike ok
    diag pass fail is_deeply done_testing);

my $RepeatEach = 1;
my $LogLevel   = 'debug';
my $MasterOn   = 0;
my $Workers    = 1;
my $NoRootLocation = 0;

my %Known = map { $_ => 1 } qw(main_config http_config config request
    raw_request more_headers error_code response_body response_body_like
    response_headers response_headers_like error_log no_error_log must_die
    timeout request_body error_code_like response_body_unlike
    raw_response_headers_like raw_response_headers_unlike ignore_response
    http09);

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

sub build_request {
    my ($block) = @_;
    return env_expand($block->{raw_request}) if defined $block->{raw_request};
    my $req = env_expand($block->{request} // die "no request\n");
    $req =~ s/\A\s+//;
    my ($line, $body) = split /\n/, $req, 2;
    $body = $block->{request_body} if defined $block->{request_body};
    $body //= '';
    $body =~ s/\n\z// unless defined $block->{request_body};
    $line =~ s/\s+\z//;
    $line .= ' HTTP/1.1' unless $line =~ m{ HTTP/\d\.\d\z};
    my $headers = "Host: localhost\r\nConnection: close\r\n";
    for my $h (split /\n/, env_expand($block->{more_headers} // '')) {
        next unless $h =~ /\S/;
        $headers .= "$h\r\n";
    }
    if (length $body || $line =~ /^(POST|PUT|PATCH)/) {
        $headers .= 'Content-Length: ' . length($body) . "\r\n";
    }
    return "$line\r\n$headers\r\n$body";
}

sub send_request {
    my ($raw, $timeout) = @_;
    my $port = $ENV{TEST_NGINX_SERVER_PORT};
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $port, Proto => 'tcp', Timeout => $timeout)
        or return (undef, "cannot connect to port $port: $!");
    binmode $sock;
    print $sock $raw;
    my $resp = '';
    my $deadline = time + $timeout;
    my $rin = '';
    vec($rin, fileno($sock), 1) = 1;
    while (time < $deadline) {
        my $left = $deadline - time;
        my $n = select(my $rout = $rin, undef, undef, $left);
        last if $n <= 0;
        my $got = sysread $sock, my $buf, 65536;
        last if !$got;
        $resp .= $buf;
    }
    close $sock;
    return (undef, "timed out after ${timeout}s") if time >= $deadline;
    return ($resp, undef);
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

    my $timeout = $block->{timeout} // 5;
    my $req = build_request($block);
    my ($raw, $err) = send_request($req, $timeout);
    fail("$name - no valid response: $err") unless defined $raw;
    $raw //= '';
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
