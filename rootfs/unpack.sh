#!/bin/sh
# rootfs/unpack.sh DEST CACHE: every package of rootfs/packages.lock,
# downloaded into CACHE once (apt-get download, from the machine's Debian
# mirror), checked against the SHA-256 the lock pins, and unpacked into
# DEST with dpkg-deb -x: files only, no maintainer script runs.
set -eu

dest=$1
cache=$2
lock=$(dirname "$0")/packages.lock
mkdir -p "$dest" "$cache"

grep -v '^#' "$lock" | while read -r name version sha256 size; do
    deb="$cache/${name}_$(echo "$version" | sed 's/^[0-9]*://')_pinned.deb"
    if [ ! -s "$deb" ] || ! echo "$sha256  $deb" | sha256sum -c --quiet \
                                 >/dev/null 2>&1; then
        rm -rf "$cache/get" && mkdir -p "$cache/get"
        if ! (cd "$cache/get" && apt-get download -qq "$name=$version" \
                  >/dev/null 2>&1); then
            echo "image: $name $version is not in this machine's Debian" \
                 "archive (apt-get update? or repin: rootfs/lock.pl, and" \
                 "the PCRs change)" >&2
            exit 1
        fi
        mv "$cache"/get/*.deb "$deb.part"
        if ! echo "$sha256  $deb.part" | sha256sum -c --quiet >/dev/null 2>&1
        then
            echo "image: $name $version: the archive's .deb is not the one" \
                 "the lock pins (sha256 $sha256)" >&2
            exit 1
        fi
        mv "$deb.part" "$deb"
    fi
    [ "$(stat -c %s "$deb")" = "$size" ] || {
        echo "image: $deb: size is not $size" >&2; exit 1; }
    dpkg-deb -x "$deb" "$dest"
done
