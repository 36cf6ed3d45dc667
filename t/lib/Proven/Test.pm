package Proven::Test;

# Fixtures the suites share, usable with either Test::Nginx harness: a
# provend with the dev provider in a temporary data directory, and a
# self-signed certificate for TLS tests.  Everything reaches the nginx
# configuration through $TEST_NGINX_* environment variables:
#   TEST_NGINX_PROVEN_SOCKET   provend's unix socket
#   TEST_NGINX_PROVEN_DATA     its data directory (attestation/dev-root.pem)
#   TEST_NGINX_DEAD_SOCKET     a socket path nobody listens on
#   TEST_NGINX_TLS_CERT/_KEY   a P-256 certificate and key
#   TEST_NGINX_TLS_PORT        a second port for TLS servers
#   TEST_NGINX_TLS_SPKI        base64 DER SubjectPublicKeyInfo of the cert

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Temp qw(tempdir);
use MIME::Base64 qw(encode_base64);
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep);

my $Pid;
my $Dir;

sub import {
    my ($class, %opts) = @_;
    my $build = abs_path($ENV{PROVEN_BUILD} // 'build');
    $Dir = tempdir('proven-t-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $data = "$Dir/data";
    mkdir $data or die "$data: $!";

    $ENV{TEST_NGINX_PROVEN_DATA}   = $data;
    $ENV{TEST_NGINX_PROVEN_SOCKET} = "$data/provend.sock";
    $ENV{TEST_NGINX_DEAD_SOCKET}   = "$Dir/nobody.sock";
    $ENV{TEST_NGINX_SILENT_SOCKET} = "$Dir/silent.sock";
    our $Silent = silent_socket("$Dir/silent.sock");
    $ENV{TEST_NGINX_TLS_PORT}    //= 1985;
    $ENV{TEST_NGINX_PROVEN_BIN}    = "$build/bin";

    make_certificate($Dir);
    start_provend("$build/bin/provend", $data, $opts{provend_args} // [])
        unless $opts{no_daemon};
}

sub make_certificate {
    my ($dir) = @_;
    my ($cert, $key) = ("$dir/tls.crt", "$dir/tls.key");
    system("openssl req -x509 -newkey ec -pkeyopt "
            . "ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost "
            . "-keyout $key -out $cert 2>/dev/null") == 0
        or die "openssl req failed";
    my $der = `openssl x509 -in $cert -pubkey -noout | openssl pkey -pubin -outform DER`;
    die "cannot extract the public key" unless length $der;
    $ENV{TEST_NGINX_TLS_CERT} = $cert;
    $ENV{TEST_NGINX_TLS_KEY}  = $key;
    $ENV{TEST_NGINX_TLS_SPKI} = encode_base64($der, '');
}

sub start_provend {
    my ($bin, $data, $args) = @_;
    -x $bin or die "$bin is missing: run make first\n";
    my $log = "$data/../provend.log";
    $Pid = fork // die "fork: $!";
    if ($Pid == 0) {
        open STDOUT, '>>', $log or die $!;
        open STDERR, '>&', \*STDOUT or die $!;
        exec $bin, '--data', $data, '--provider', 'dev', @$args
            or die "exec $bin: $!";
    }
    for (1 .. 500) {
        return if -S "$data/provend.sock";
        if (waitpid($Pid, WNOHANG) == $Pid) {
            $Pid = undef;
            die "provend exited at start:\n" . `cat $log`;
        }
        sleep 0.02;
    }
    die "provend did not create its socket:\n" . `cat $log`;
}

# Deploys the application at $path (a folder under t/apps) as $name with the
# CLI and waits until its worker serves (the state page lists it).
sub deploy_app {
    my ($name, $path) = @_;
    my $bin = $ENV{TEST_NGINX_PROVEN_BIN};
    local $ENV{PROVEN_DATA} = $ENV{TEST_NGINX_PROVEN_DATA};
    my $out = `$bin/proven app deploy $path --app $name 2>&1`;
    $? == 0 or die "deploy of $name failed: $out";
    for (1 .. 500) {
        my $list = `$bin/proven app list 2>&1`;
        return $out if $list =~ /"app":"\Q$name\E"[^\n]*"sockets":\["/;
        sleep 0.02;
    }
    die "the worker of $name did not start";
}

# A raw POST of exact bytes as application/cbor: a request section's body
# loses the whitespace bytes at both its ends.
sub post_cbor {
    my ($path, $body) = @_;
    return "POST $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
         . "Content-Type: application/cbor\r\n"
         . "Content-Length: " . length($body) . "\r\n\r\n" . $body;
}

# Creates a unix socket that accepts connections into its backlog and never
# answers: a daemon that hangs.
sub silent_socket {
    my ($path) = @_;
    require IO::Socket::UNIX;
    unlink $path;
    my $sock = IO::Socket::UNIX->new(Type => IO::Socket::UNIX::SOCK_STREAM(),
        Local => $path, Listen => 16);
    die "$path: $!" unless $sock;
    return $sock;
}

END {
    if ($Pid) {
        my $status = $?;
        kill 'TERM', $Pid;
        waitpid($Pid, 0);
        if ($? != 0) {
            # A daemon that crashed, or a sanitizer report at exit, fails
            # the suite.
            print STDERR "provend exited with status $?:\n",
                `tail -n 50 $Dir/provend.log`;
            $status = 1;
        }
        $? = $status;
    }
}

1;
