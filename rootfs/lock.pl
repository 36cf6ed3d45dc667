#!/usr/bin/perl
# Resolves rootfs/packages to rootfs/packages.lock: every package the
# enclave's file system unpacks, with the version, the SHA-256, the size and
# the path on Debian's mirrors of its .deb, as this machine's apt sees them
# now (its sources must include bookworm-security and bookworm-updates), dependencies
# (Depends, Pre-Depends) followed.  Run it to repin (the PCRs change); the
# image build uses only the lock.  Versions come from Debian's archive
# alone (a third-party repository's nodejs is not the image's).
use strict;
use warnings;

my $dir = $0 =~ m{(.*)/} ? $1 : '.';
my (@want, %skip, %build);
open(my $in, '<', "$dir/packages") or die "lock: $dir/packages: $!\n";
while (<$in>) {
    s/#.*//;
    s/^\s+|\s+$//g;
    next if $_ eq '';
    if (/^-(\S+)$/) { $skip{$1} = 1 }
    elsif (/^build:\s*(\S+)$/) { $build{$1} = 1 }
    else { push @want, $_ }
}
close $in;

# The newest version Debian's archive has of a package, or undef.
sub debian_version {
    my ($name) = @_;
    for (`apt-cache madison '$name' 2>/dev/null`) {
        my ($pkg, $ver, $src) = map { s/^\s+|\s+$//gr } split /\|/;
        return $ver if $pkg eq $name && $src =~ m{debian\.org/};
    }
    return undef;
}

my (%lock, @queue);
push @queue, @want, sort keys %build;
while (defined(my $name = shift @queue)) {
    next if $lock{$name} || $skip{$name};
    my $ver = debian_version($name)
        or die "lock: no Debian package $name\n";
    my %f;
    my $key;
    for (`apt-cache show '$name=$ver'`) {
        last if /^$/;
        if (/^(\S+):\s*(.*)$/) { $key = $1; $f{$key} = $2 }
    }
    die "lock: $name $ver: no SHA256\n" unless $f{SHA256} && $f{Filename};
    # where Debian keeps it: the security archive's pool is pool/updates/
    my $archive = $f{Filename} =~ m{^pool/updates/} ? 'debian-security'
                                                     : 'debian';
    $lock{$name} = "$name $ver $f{SHA256} $f{Size} $archive/$f{Filename}";
    if ($build{$name}) {
        $lock{$name} .= ' build';
        next;
    }
    for my $group (map { split /,/ } grep { defined }
                   @f{qw(Depends Pre-Depends)})
    {
        my @alts = map { (s/^\s+//r =~ /^([^\s:(]+)/)[0] } split /\|/, $group;
        next if grep { $skip{$_} } @alts;
        my ($real) = grep { debian_version($_) } @alts;
        die "lock: $name needs one of @alts, none in Debian\n" unless $real;
        push @queue, $real;
    }
}

open(my $out, '>', "$dir/packages.lock.new") or die "lock: $!\n";
print $out "# name version sha256 size path [build]: written by rootfs/lock.pl from "
         . "rootfs/packages\n";
print $out "$lock{$_}\n" for sort keys %lock;
close $out or die "lock: $!\n";
rename("$dir/packages.lock.new", "$dir/packages.lock") or die "lock: $!\n";
printf "lock: %d packages\n", scalar keys %lock;
