#!/bin/bash
# rootfs/unpack.sh DEST CACHE [build]: every package of rootfs/packages.lock
# (or $PROVEN_IMAGE_LOCK) that runs in the image (with "build": those that
# only build it), downloaded into CACHE once from a Debian mirror
# (PROVEN_DEBIAN_MIRROR, default http://deb.debian.org: the lock names each
# .deb's path there, so the machine's own apt sources do not matter),
# checked against the SHA-256 and size the lock pins (the mirror is not
# trusted), and unpacked into DEST with dpkg-deb -x: files only, no
# maintainer script runs.
set -euo pipefail

dest=$1
cache=$2
want=${3:-}
lock=${PROVEN_IMAGE_LOCK:-$(dirname "$0")/packages.lock}
mirror=${PROVEN_DEBIAN_MIRROR:-http://deb.debian.org}
mkdir -p "$dest" "$cache"

grep -v '^#' "$lock" | while read -r name version sha256 size path kind; do
    [ "${kind:-}" = "$want" ] || continue
    deb=$cache/$(basename "$path")
    if [ ! -s "$deb" ] || ! echo "$sha256  $deb" | sha256sum -c --quiet \
                                 >/dev/null 2>&1; then
        if ! curl -fsSL --retry 3 -o "$deb.part" "$mirror/$path"; then
            echo "image: $name $version: cannot download $mirror/$path" \
                 "(gone from the archive? rootfs/lock.pl repins, and the" \
                 "PCRs change)" >&2
            exit 1
        fi
        if ! echo "$sha256  $deb.part" | sha256sum -c --quiet >/dev/null 2>&1
        then
            echo "image: $name $version: $mirror/$path is not the .deb the" \
                 "lock pins (sha256 $sha256)" >&2
            rm -f "$deb.part"
            exit 1
        fi
        mv "$deb.part" "$deb"
    fi
    [ "$(stat -c %s "$deb")" = "$size" ] || {
        echo "image: $deb: size is not $size" >&2; exit 1; }
    dpkg-deb -x "$deb" "$dest"
done
