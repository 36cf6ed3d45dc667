package Test::Nginx::Socket;

# A small Test::Nginx::Socket: the part of openresty's CPAN harness that our
# suites use (see ../shared/STYLE.md), so `make test` needs nothing from
# CPAN.  The .t files run unchanged under the CPAN module: only `prove -I
# t/lib` makes this one shadow it.  t/lib/harness.t checks the rules below
# without nginx.
#
# Each section means here what it means there; a section this harness does
# not implement stops the suite rather than being ignored.  The rules:
#
# Blocks (Test::Base): "=== title" starts a block, "--- name [filters]" a
# section, "--- name: value" a one-line section.  Every value loses its
# leading blank lines and all whitespace after its last newline; eval runs
# in a package of its own under strict and keeps the first value returned.
# ONLY, SKIP and LAST do what Test::Base does.  Blocks run in random order
# unless no_shuffle() or TEST_NGINX_NO_SHUFFLE.
#
# Requests: $TEST_NGINX_* is expanded in the configuration sections and in
# response_body, nowhere else.  "--- request" is "METHOD [URI [VERSION]]"
# and a body; comment lines before it are dropped.  Host and Connection:
# close are added unless more_headers has them; a body loses the whitespace
# at both its ends and gets a Content-Length, unless more_headers gives one
# or says chunked; an empty body gets none.  more_headers lines become
# "Name: value" (comment lines dropped).  raw_request goes out as written
# (a list: as separate writes).
#
# Responses: parsed like HTTP::Response.  A chunked body must end with its
# last chunk, else the block fails and the response counts as absent (no
# status, no body); a body longer than Content-Length is cut there.
# "--- ignore_response" skips the parsing and every response check;
# "--- http09" takes the bytes received, unparsed, as a 200's body.
# "--- timeout" (default TEST_NGINX_TIMEOUT or 3 s; "ms" allowed) bounds
# each wait for the socket, and its expiry fails the block unless "---
# abort"; what arrived is checked either way.
#
# Checks: error_code (default 200) or error_code_like; response_headers, or
# if absent response_headers_like, whose patterns are anchored (^...$) to
# the value (values of repeated headers joined by ", "; a missing header is
# ""); "!Name" means the name starts no line of the raw headers
# (case-sensitive).  response_body is exact (an eval'd qr// is matched);
# response_body_like/_unlike (only when response_body is absent) match
# qr/PATTERN/s, unanchored.  error_log/no_error_log: each line of the
# section is a substring, each qr// a pattern, tested against each line of
# the error log written since the block's previous request (the whole log
# for its first), read 45 ms after the response while nginx still runs.
#
# Beyond openresty: after each block nginx is stopped and the whole log
# must hold no sanitizer report or crash.

use strict;
use warnings;

# An eval filter's code runs here, in a package of its own and before this
# file's lexicals, so it sees only what it names in full ($::x).
sub eval_section {
    package Test::Nginx::Socket::Eval;
    return eval $_[0];
}

use Cwd qw(cwd);
use Errno qw(EAGAIN EWOULDBLOCK);
use File::Path qw(make_path remove_tree);
use IO::Select;
use IO::Socket::INET;
use List::Util qw(shuffle);
use Scalar::Util qw(looks_like_number);
use Test::More;
use Time::HiRes qw(sleep time);

our @EXPORT = qw(run_tests blocks repeat_each no_shuffle no_long_string
    log_level master_on master_off workers worker_connections
    no_root_location timeout env_to_nginx check_accum_error_log server_port
    server_root html_dir plan is isnt like unlike ok diag note pass fail
    is_deeply done_testing BAIL_OUT);

our $ServerPort = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT}
    || 1984;
our $ClientPort = $ENV{TEST_NGINX_CLIENT_PORT} || $ServerPort;
our $ServRoot   = $ENV{TEST_NGINX_SERVROOT} || cwd() . '/t/servroot';
our $Binary     = $ENV{TEST_NGINX_BINARY} || 'nginx';
$ENV{TEST_NGINX_SERVER_ROOT} = $ServRoot;

my $RepeatEach   = 1;
my $LogLevel     = $ENV{TEST_NGINX_LOG_LEVEL} || 'debug';
my $Master       = $ENV{TEST_NGINX_MASTER_PROCESS} || 'off';
my $Workers      = 1;
my $Connections  = 64;
my $RootLocation = 1;
my $Shuffle      = !$ENV{TEST_NGINX_NO_SHUFFLE};
my $Timeout      = $ENV{TEST_NGINX_TIMEOUT} || 3;
my $AccumLog     = $ENV{TEST_NGINX_CHECK_ACCUM_ERR_LOG};
my $Sleep        = $ENV{TEST_NGINX_SLEEP} || 0.015;
my @EnvToNginx;

# The sections implemented here; openresty's others (and any name it would
# ignore) stop the suite.
my %Known = map { $_ => 1 } qw(main_config http_config config
    post_main_config request raw_request raw_request_middle_delay
    more_headers error_code error_code_like response_body response_body_like
    response_body_unlike response_headers response_headers_like
    raw_response_headers_like raw_response_headers_unlike error_log
    no_error_log access_log no_access_log must_die timeout abort
    ignore_response http09 log_level wait ONLY SKIP LAST);

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
sub no_shuffle     { $Shuffle = 0 }
sub no_long_string { }
sub log_level      { $LogLevel = shift if @_; return $LogLevel }
sub master_on      { $Master = 'on' }
sub master_off     { $Master = 'off' }
sub workers        { $Workers = shift if @_; return $Workers }
sub worker_connections { $Connections = shift if @_; return $Connections }
sub no_root_location { $RootLocation = 0 }
sub timeout        { $Timeout = shift if @_; return $Timeout }
sub check_accum_error_log { $AccumLog = 1 }
sub server_port    { $ServerPort = shift if @_; return $ServerPort }
sub server_root    { $ServRoot }
sub html_dir       { "$ServRoot/html" }

sub env_to_nginx {
    for my $v (@_) {
        die "env_to_nginx: bad argument value: $v\n"
            if $v !~ /^[A-Za-z_]/ || $v =~ /\n/;
        push @EnvToNginx, $v;
    }
}

# ---- blocks ----------------------------------------------------------------

my $Blocks;

sub blocks {
    $Blocks //= parse_spec(read_data(), $0);
    return @$Blocks;
}

# What Test::Base reads from main::DATA: everything after __DATA__.
sub read_data {
    open my $fh, '<', $0 or die "cannot read $0: $!";
    local $/;
    my $text = <$fh>;
    close $fh;
    $text =~ s/\A.*?^__DATA__\r?\n//ms or die "$0: no __DATA__ section\n";
    return $text;
}

sub parse_spec {
    my ($spec, $file) = @_;
    my @blocks;
    for my $hunk ($spec =~ /^(===.*?(?=^===|\z))/msg) {
        my $block = parse_block($hunk, $file);
        return [$block] if exists $block->{ONLY};
        next if exists $block->{SKIP};
        push @blocks, $block;
        last if exists $block->{LAST};
    }
    return \@blocks;
}

sub parse_block {
    my ($hunk, $file) = @_;
    $hunk =~ s/\A===[ \t]*(.*)\s+// or die "$file: bad block\n";
    my %block = (title => $1);
    my @parts = split /^--- +\(?(\w+)\)? *(.*)?\n/m, $hunk;
    shift @parts;    # the description
    while (@parts) {
        my ($name, $filters, $value) = splice @parts, 0, 3;
        $filters //= '';
        $value   //= '';
        if ($filters =~ /:(\s|\z)/) {
            die "$file: $block{title}: text after the one-line section"
                . " '$name'\n" if $value =~ /\S/;
            ($filters, $value) = split /\s*:(?:\s+|\z)/, $filters, 2;
            $value //= '';
            $value =~ s/^\s*(.*?)\s*$/$1/;
        }
        die "$file: $block{title}: section '$name' is not implemented by"
            . " t/lib's Test::Nginx::Socket\n" unless $Known{$name};
        $block{$name} = apply_filters($value, $filters,
            "$file: $block{title}: $name");
    }
    return \%block;
}

# Test::Base's default filters (norm, trim), then the section's own.
sub apply_filters {
    my ($value, $filters, $where) = @_;
    $value =~ s/\r\n/\n/g;
    $value =~ s/\r/\n/g;
    $value =~ s/\A(?:[ \t]*\n)+//;
    $value =~ s/(?<=\n)\s*\z//;
    my @v = ($value);
    for my $f (split ' ', $filters) {
        if ($f eq 'eval') {
            @v = eval_section(join '', @v);
            die "$where: eval failed: $@" if $@;
        } elsif ($f eq 'chomp') {
            chomp for @v;
        } elsif ($f eq 'chop') {
            chop for @v;
        } else {
            die "$where: filter '$f' is not implemented\n";
        }
    }
    return $v[0];
}

# ---- configuration and nginx ------------------------------------------------

sub expand_env {
    my ($text, $name) = @_;
    return $text unless defined $text && !ref $text;
    $text =~ s/\$(TEST_NGINX_[_A-Z0-9]+)/
        defined $ENV{$1} ? $ENV{$1}
            : BAIL_OUT("$name - No environment $1 defined.")/ge;
    return $text;
}

sub write_config {
    my ($block, $name) = @_;
    my $root = $ServRoot;
    my $main = expand_env($block->{main_config} // '', $name);
    my $http = expand_env($block->{http_config} // '', $name);
    my $post = expand_env($block->{post_main_config} // '', $name);
    my $loc  = expand_env($block->{config} // '', $name);
    my $modules = join ' ', map { "load_module $_;" }
        grep { length } split /\s+/, $ENV{TEST_NGINX_LOAD_MODULES} // '';
    my $level = $block->{log_level} // $LogLevel;
    my $env = join '', map { "env $_;\n" } qw(LD_PRELOAD LD_LIBRARY_PATH
        ASAN_OPTIONS), @EnvToNginx;
    my $user = $> == 0 ? 'user root;' : '';
    my $root_location = !$RootLocation ? ''
        : "location / { root $root/html; index index.html index.htm; }";
    my $conf = <<"CONF";
worker_processes $Workers;
daemon on;
master_process $Master;
error_log $root/logs/error.log $level;
pid $root/logs/nginx.pid;
$env
$modules $main

http {
    access_log $root/logs/access.log;
    client_body_temp_path $root/client_body_temp;
    proxy_temp_path $root/proxy_temp;
    fastcgi_temp_path $root/fastcgi_temp;
    uwsgi_temp_path $root/uwsgi_temp;
    scgi_temp_path $root/scgi_temp;
    default_type text/plain;
    keepalive_timeout 68000ms;

$http
    server {
        listen 127.0.0.1:$ServerPort;
        server_name 'localhost';
        client_max_body_size 30M;
$loc
        $root_location
    }
}

$post

events {
    accept_mutex off;
    worker_connections $Connections;
}
$user
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

sub setup_server_root {
    stop_nginx();
    remove_tree($ServRoot);
    make_path("$ServRoot/conf", "$ServRoot/logs", "$ServRoot/html");
    open my $fh, '>', "$ServRoot/html/index.html" or die "$ServRoot: $!";
    print $fh '<html><head><title>It works!</title></head>'
        . '<body>It works!</body></html>';
    close $fh;
}

sub nginx_pid {
    my $pid = slurp("$ServRoot/logs/nginx.pid");
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
    my $pid = nginx_pid() or return;
    kill 'TERM', $pid;
    for (1 .. 400) {
        return unless alive($pid);
        sleep 0.01;
    }
    kill 'KILL', $pid;
    sleep 0.05;
}

# Starts nginx as openresty does (-e: the log of start-up errors is the
# block's error.log); returns the exit status of the command and whether a
# daemon runs.
sub start_nginx {
    system("$Binary -e $ServRoot/logs/error.log -p $ServRoot/"
        . " -c $ServRoot/conf/nginx.conf > /dev/null");
    my $status = $?;
    return ($status, 0) if $status != 0;
    for (1 .. 250) {
        my $pid = nginx_pid();
        return ($status, 1) if $pid && alive($pid);
        sleep 0.02;
    }
    return ($status, 0);
}

# ---- requests -----------------------------------------------------------------

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

# ---- responses ----------------------------------------------------------------

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
            $want = expand_env(server_ports($want), $name);
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

# ---- logs ---------------------------------------------------------------------

my $ErrLogPos = 0;

sub error_log_lines {
    sleep $Sleep * 3;
    open my $fh, '<', "$ServRoot/logs/error.log" or return [];
    seek $fh, $ErrLogPos, 0 if !$AccumLog && $ErrLogPos > 0;
    my @lines = <$fh>;
    $ErrLogPos = tell $fh unless $AccumLog;
    close $fh;
    return \@lines;
}

sub access_log_lines {
    sleep $Sleep * 3;
    open my $fh, '<', "$ServRoot/logs/access.log" or return [];
    my @lines = <$fh>;
    close $fh;
    return \@lines;
}

sub patterns {
    my ($spec) = @_;
    return [$spec] if ref $spec eq 'Regexp';
    return [@$spec] if ref $spec eq 'ARRAY';
    chomp(my $s = $spec);
    return [split /\n+/, $s];
}

sub line_matches {
    my ($line, $pat) = @_;
    return ref $pat ? $line =~ /$pat/ : $line =~ /\Q$pat\E/;
}

sub show {
    my ($s) = @_;
    chomp $s;
    $s =~ s/"/\\"/g;
    $s =~ s/\r/\\r/g;
    $s =~ s/\n/\\n/g;
    return $s;
}

# error_log / no_error_log (and the access log's pair): every pattern of
# the first must match a line; a line matching a pattern of the second
# fails once per such line.
sub check_log_patterns {
    my ($name, $lines, $what, $want, $spec, $rep) = @_;
    my @pats = @{ patterns($spec) };
    my %seen;
    for my $line (@$lines) {
        for my $i (0 .. $#pats) {
            next unless line_matches($line, $pats[$i]);
            if ($want) {
                next if $seen{$i}++;
                pass("$name - pattern \"$pats[$i]\" matches a line in"
                    . " $what (req $rep)");
            } else {
                $seen{$i} = 1;
                fail("$name - pattern \"" . show($pats[$i]) . "\" should"
                    . " not match any line in $what but matches line \""
                    . show($line) . "\" (req $rep)");
            }
        }
    }
    for my $i (0 .. $#pats) {
        next if $seen{$i};
        if ($want) {
            fail("$name - pattern \"$pats[$i]\" should match a line in"
                . " $what (req $rep)");
        } else {
            pass("$name - pattern \"" . show($pats[$i]) . "\" does not"
                . " match a line in $what (req $rep)");
        }
    }
}

sub mentions {
    my ($spec, $text) = @_;
    return 0 unless defined $spec;
    return index("$spec", $text) >= 0 unless ref $spec eq 'ARRAY';
    return grep { mentions($_, $text) } @$spec;
}

sub check_error_log {
    my ($block, $name, $rep) = @_;
    my $lines = error_log_lines();
    check_log_patterns($name, $lines, 'error.log', 1, $block->{error_log},
        $rep) if defined $block->{error_log};
    check_log_patterns($name, $lines, 'error.log', 0,
        $block->{no_error_log}, $rep) if defined $block->{no_error_log};
    for my $level (qw(alert crit emerg)) {
        next if mentions($block->{error_log}, "[$level")
             || mentions($block->{no_error_log}, "[$level");
        warn "WARNING: $name - " . show($_) . "\n"
            for grep { /\[$level\]/ } @$lines;
    }
    for my $line (@$lines) {
        next unless $line =~ /\bAssertion .*?failed\b/;
        chomp(my $l = $line);
        fail("$name - $l");
    }
}

sub check_access_log {
    my ($block, $name, $rep) = @_;
    return unless defined $block->{access_log}
        || defined $block->{no_access_log};
    my $lines = access_log_lines();
    check_log_patterns($name, $lines, 'access.log', 1, $block->{access_log},
        $rep) if defined $block->{access_log};
    check_log_patterns($name, $lines, 'access.log', 0,
        $block->{no_access_log}, $rep) if defined $block->{no_access_log};
}

# ---- running --------------------------------------------------------------------

sub run_request {
    my ($block, $name, $rep) = @_;
    my @packets = build_request($block, $name);
    my $timeout = parse_time($block->{timeout}) // $Timeout;
    my $raw = send_request($block, $name, \@packets, $timeout);
    my $head_req = join('', @packets) =~ /^\s*HEAD\s+/ ? 1 : 0;

    unless (defined $block->{ignore_response}) {
        my ($res, $raw_headers, $left);
        if (defined $block->{http09}) {
            ($res, $raw_headers) = ({ code => 200, fields => [],
                content => $raw }, '');
        } else {
            ($res, $raw_headers, $left) = parse_response($name, $raw,
                $head_req);
        }
        if ($left) {
            (my $l = $left) =~ s/([\0-\037\200-\377])/sprintf('\x{%02x}',
                ord $1)/eg;
            warn "WARNING: $name - unexpected extra bytes after last chunk"
                . " in response: \"$l\"\n";
        }
        check_response($block, $name, $res, $raw_headers, $rep);
    }
    sleep $block->{wait} if $block->{wait};
    check_error_log($block, $name, $rep);
    check_access_log($block, $name, $rep)
        unless defined $block->{ignore_response};
}

sub must_die {
    my ($block, $name) = @_;
    my $want = $block->{must_die};
    $ErrLogPos = 0;
    for my $rep (0 .. $RepeatEach - 1) {
        my ($status, $running) = start_nginx();
        if (looks_like_number($want)) {
            is($want, $status >> 8, "$name - die with the expected exit code");
        } else {
            isnt($status, 0, "$name - die as expected");
        }
        check_error_log($block, $name, $rep);
        if ($status == 0) {
            warn "WARNING: $name - nginx must die but it does not; killing"
                . " it (req $rep)\n";
            stop_nginx();
        }
    }
}

# Our addition: a sanitizer report or a crash anywhere in the block's log,
# start to stop, fails it.
sub check_crash {
    my ($name) = @_;
    my $log = slurp("$ServRoot/logs/error.log");
    my $re = qr/AddressSanitizer|runtime error:|LeakSanitizer|on signal \d+/;
    ok($log !~ $re, "$name - no sanitizer report or crash in the error log")
        or diag($log =~ /((?:$re).{0,2000})/s);
}

sub run_block {
    my ($block) = @_;
    my $name = "$0 $block->{title}";
    setup_server_root();
    write_config($block, $name);
    if (defined $block->{must_die}) {
        must_die($block, $name);
        return;
    }
    my ($status, $running) = start_nginx();
    unless ($running) {
        fail("$name - nginx failed to start (status $status)");
        diag(slurp("$ServRoot/logs/error.log"));
        return;
    }
    sleep $Sleep;
    $ErrLogPos = 0;
    run_request($block, $name, $_) for 0 .. $RepeatEach - 1;
    stop_nginx();
    check_crash($name);
}

sub run_tests {
    $ENV{TEST_NGINX_SERVER_PORT} //= $ServerPort;
    my @blocks = blocks();
    if (@blocks == 1 && exists $blocks[0]{ONLY}) {
        diag("I found ONLY: maybe you're debugging?");
    }
    @blocks = shuffle @blocks if $Shuffle;
    run_block($_) for @blocks;
    stop_nginx();
}

1;
