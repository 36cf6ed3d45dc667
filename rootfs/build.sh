#!/bin/bash
# rootfs/build.sh OUT BINARIES: the enclave image, OUT/proven.eif, from
#   - the Debian packages of rootfs/packages.lock (rootfs/unpack.sh), the
#     kernel among them;
#   - BINARIES: our build for the image (bin/, modules/, init), made with
#     fixed paths and no debug info by `make image`;
#   - rootfs/: init's services and modules lists, the enclave nginx.conf,
#     the cluster template (cluster.json) and the AWS Nitro root it names;
#   - runtime/ with its node_modules.
# PROVEN_IMAGE_TRANSPORT: qemu (default: TCP through proven-host) or nitro
# (vsock).  PROVEN_IMAGE_DOH: the DoH server egress resolves names with
# (https://1.1.1.1/dns-query; its host an address).  PROVEN_IMAGE_NGINX_CONF and PROVEN_IMAGE_SERVICES put other files in
# place of rootfs/'s (tests build changed images with them).  Storage in
# enclave mode: PROVEN_IMAGE_KEYD (the transport address of keyd: on
# Nitro vsock:3:PORT, under proven-host --keyd tcp:10.0.2.100:7000) and
# PROVEN_IMAGE_KEYD_IDENTITY (a file with keyd's identity in hex, `proven
# keyd identity`) put it in the image, measured: provend asks that keyd,
# and trusts answers signed by that identity only.  For Nitro,
# whose devices Debian 12's kernel cannot drive (no NSM driver before
# Linux 6.8, no virtio-mmio devices from the command line):
# The node's own certificate: PROVEN_IMAGE_ACME (an ACME directory URL,
# https; needs PROVEN_IMAGE_KEYD, as the keys are kept sealed with keyd's
# master key) puts it in the image, with its host in egress.allow;
# PROVEN_IMAGE_ACME_CA (a PEM file) the CA its HTTPS chains to (default
# the pinned Mozilla roots).  The host's initialize names the domain
# (config.tls).  For Nitro,
# PROVEN_IMAGE_KERNEL (a bzImage), PROVEN_IMAGE_CMDLINE (its command line)
# and PROVEN_IMAGE_MODULES (.ko files init loads first, e.g. nsm.ko).
# Two ramdisks, as on Nitro: the boot one (init, the kernel modules it
# loads, their list: PCR1 with the kernel and cmdline) and the application
# one (everything else: PCR2).  Every file's time is 0 (SOURCE_DATE_EPOCH
# from the environment is not taken: the tree alone decides), owners 0:0, modes normalised, entries sorted: the same tree,
# the same bytes.  A path in both ramdisks is refused: the later would
# replace the boot one's file, which PCR1 alone would not show.
set -euo pipefail

out=$1
bin=$2
top=$(cd "$(dirname "$0")/.." && pwd)
rootfs=$top/rootfs
cache=${PROVEN_DEB_CACHE:-$top/build/debs}
cmdline="console=ttyS0 reboot=k panic=1 random.trust_cpu=on quiet"
cmdline="$cmdline proven.ip=10.0.2.15/24 proven.control=/dev/ttyS1"
cmdline=${PROVEN_IMAGE_CMDLINE:-$cmdline}

pkgs=$top/build/packages
boot=$out/boot
app=$out/app

# what is wrong with the settings, said before any work
acme=${PROVEN_IMAGE_ACME:-}
if [ -n "$acme" ]; then
    acme_re='^https://([a-z0-9.-]+|\[[0-9a-f:]+\])(:[0-9]+)?/[A-Za-z0-9/._~-]*$'
    [[ $acme =~ $acme_re ]] \
        || { echo "build.sh: PROVEN_IMAGE_ACME: an https URL (lower case" \
                  "host, no query)" >&2; exit 1; }
    [ -n "${PROVEN_IMAGE_KEYD:-}" ] \
        || { echo "build.sh: PROVEN_IMAGE_ACME needs PROVEN_IMAGE_KEYD: the" \
                  "certificate's keys are kept sealed with keyd's master key" \
                  "(without it they would be ordered again at every start)" >&2
             exit 1; }
    acme_host=${acme#https://}
    acme_host=${acme_host%%/*}
    [[ $acme_host == *:[0-9]* && $acme_host != *] ]] || acme_host=$acme_host:443
fi
if [ -n "${PROVEN_IMAGE_ACME_CA:-}" ]; then
    [ -n "$acme" ] && [ -s "$PROVEN_IMAGE_ACME_CA" ] \
        || { echo "build.sh: PROVEN_IMAGE_ACME_CA: a PEM file, with" \
                  "PROVEN_IMAGE_ACME" >&2; exit 1; }
fi

# the packages, unpacked once per lock
lock_sum=$(sha256sum "$rootfs/packages.lock" | cut -c1-16)
if [ "$(cat "$pkgs/.lock" 2>/dev/null)" != "$lock_sum" ]; then
    rm -rf "$pkgs"
    "$rootfs/unpack.sh" "$pkgs" "$cache"
    echo "$lock_sum" >"$pkgs/.lock"
fi
release=$(ls "$pkgs/lib/modules")
kernel=${PROVEN_IMAGE_KERNEL:-$pkgs/boot/vmlinuz-$release}

# the boot ramdisk: init and the modules it loads
rm -rf "$boot" "$app"
mkdir -p "$boot/etc/proven" "$boot/lib/modules/$release"
cp "$bin/init" "$boot/init"
: >"$boot/etc/proven/modules"
for m in ${PROVEN_IMAGE_MODULES:-}; do
    mkdir -p "$boot/lib/modules/extra"
    cp "$m" "$boot/lib/modules/extra/"
    echo "/lib/modules/extra/$(basename "$m")" >>"$boot/etc/proven/modules"
done
cat "$rootfs/modules" >>"$boot/etc/proven/modules"
grep -v '^#' "$rootfs/modules" | while read -r m; do
    mkdir -p "$boot/lib/modules/$release/$(dirname "$m")"
    cp "$pkgs/lib/modules/$release/$m" "$boot/lib/modules/$release/$m"
done

# the application ramdisk: the packages without the kernel and the
# documentation, then ours
mkdir -p "$app"
(cd "$pkgs" && tar -cf - --exclude=./boot --exclude=./lib/modules \
    --exclude=./usr/share/doc --exclude=./usr/share/man \
    --exclude=./usr/share/info --exclude=./usr/share/locale \
    --exclude=./usr/share/lintian --exclude=./usr/share/bug \
    --exclude=./usr/share/bash-completion --exclude=./usr/share/gdb \
    --exclude=./usr/share/systemtap --exclude=./.lock .) \
    | (cd "$app" && tar -xf -)
mkdir -p "$app/opt/proven/bin" "$app/opt/proven/modules" "$app/etc/proven" \
    "$app/var/lib/proven" "$app/var/lib/nginx" "$app/var/log/nginx" \
    "$app/root" "$app/proc" "$app/sys" "$app/dev" "$app/run" "$app/tmp"
cp "$bin/bin/provend" "$bin/bin/proven" "$bin/bin/proven-relay" \
    "$bin/bin/proven-egress" "$bin/bin/proven-agent" "$app/opt/proven/bin/"
cp "$bin"/modules/ngx_http_proven_*_module.so "$app/opt/proven/modules/"
# no debug info (nginx's own build adds -g, with the build's paths in it)
# and no build id (a hash over the file as linked, debug info included)
for f in "$app"/opt/proven/bin/* "$app"/opt/proven/modules/*.so; do
    objcopy --strip-debug --remove-section=.note.gnu.build-id "$f"
done
# the runtime as git has it (no stray file of the checkout), and its
# node_modules as npm ci made them, without npm's own bookkeeping (which
# differs between npm versions)
if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
    runtime_files=$(git -C "$top" ls-files runtime/bin runtime/lib \
                    runtime/package.json)
else
    runtime_files=$(cd "$top" && find runtime/bin runtime/lib \
                    runtime/package.json -type f)
fi
(cd "$top" && tar -cf - --exclude=runtime/node_modules/.stamp \
    --exclude=runtime/node_modules/.package-lock.json \
    $runtime_files runtime/node_modules) \
    | (cd "$app/opt/proven" && tar -xf -)
# the transport: under qemu TCP (proven-host's hostfwd in, guestfwd out),
# on Nitro vsock to the parent (CID 3)
case ${PROVEN_IMAGE_TRANSPORT:-qemu} in
    qemu)  listen=tcp:0.0.0.0 host=tcp:10.0.2.100 ;;
    nitro) listen=vsock:any   host=vsock:3 ;;
    *) echo "build.sh: PROVEN_IMAGE_TRANSPORT is qemu or nitro" >&2; exit 1 ;;
esac
doh=${PROVEN_IMAGE_DOH:-https://1.1.1.1/dns-query}
doh_re='^https://[][0-9a-f.:]+(:[0-9]+)?/[A-Za-z0-9/._-]*$'
[[ $doh =~ $doh_re ]] \
    || { echo "build.sh: PROVEN_IMAGE_DOH: an https URL whose host is an" \
              "address" >&2; exit 1; }
sed -e "s|@LISTEN@|$listen|g" -e "s|@HOST@|$host|g" -e "s|@DOH@|$doh|g" \
    "${PROVEN_IMAGE_SERVICES:-$rootfs/services}" >"$app/etc/proven/services"
cp "$rootfs/egress.allow" "$rootfs/egress.permit" "$rootfs/cluster.json" \
    "$rootfs/aws-nitro-root.pem" "$app/etc/proven/"
# DoH's CA bundle: the pinned ca-certificates' roots, in a fixed order
find "$pkgs/usr/share/ca-certificates/mozilla" -name '*.crt' | LC_ALL=C sort \
    | xargs cat >"$app/etc/proven/ca.pem"
[ -s "$app/etc/proven/ca.pem" ] \
    || { echo "build.sh: no CA certificates in the packages" >&2; exit 1; }
if [ -n "${PROVEN_IMAGE_KEYD:-}${PROVEN_IMAGE_KEYD_IDENTITY:-}" ]; then
    [ -n "${PROVEN_IMAGE_KEYD:-}" ] && [ -n "${PROVEN_IMAGE_KEYD_IDENTITY:-}" ] \
        || { echo "build.sh: PROVEN_IMAGE_KEYD and PROVEN_IMAGE_KEYD_IDENTITY" \
                  "go together" >&2; exit 1; }
    ! grep -q -- '--keyd' "$app/etc/proven/services" \
        || { echo "build.sh: the services file names a keyd already" >&2
             exit 1; }
    identity=$(tr -d ' \n' <"$PROVEN_IMAGE_KEYD_IDENTITY")
    [[ $identity =~ ^[0-9a-f]{64}$ && $PROVEN_IMAGE_KEYD =~ ^[a-z0-9.:/_-]+$ ]] \
        || { echo "build.sh: PROVEN_IMAGE_KEYD_IDENTITY holds 64 hex" \
                  "digits, PROVEN_IMAGE_KEYD an address" >&2; exit 1; }
    echo "$identity" >"$app/etc/proven/keyd.pub"
    sed -i "s|^\(provend .*/opt/proven/bin/provend .*\)$|\1 --keyd $PROVEN_IMAGE_KEYD --keyd-identity @/etc/proven/keyd.pub|" \
        "$app/etc/proven/services"
    grep -q -- "--keyd $PROVEN_IMAGE_KEYD " "$app/etc/proven/services" \
        || { echo "build.sh: no provend line in services for --keyd" >&2
             exit 1; }
fi
if [ -n "$acme" ]; then
    # the agent writes the name initialize gives; provend orders for it
    # through egress, nginx serves what it keeps (rootfs/nginx.conf)
    acme_ca=/etc/proven/ca.pem
    if [ -n "${PROVEN_IMAGE_ACME_CA:-}" ]; then
        cp "$PROVEN_IMAGE_ACME_CA" "$app/etc/proven/acme-ca.pem"
        acme_ca=/etc/proven/acme-ca.pem
    fi
    echo "$acme_host" >>"$app/etc/proven/egress.allow"
    sed -i -e "s|^\(agent .*/opt/proven/bin/proven-agent .*\)$|\1 --tls-domain /run/proven/tls.domain|" \
        -e "s|^\(provend .*/opt/proven/bin/provend .*\)$|\1 --acme-directory $acme --acme-domain @/run/proven/tls.domain --acme-ca $acme_ca --acme-proxy http://127.0.0.1:3128 --tls-live /run/proven/tls|" \
        "$app/etc/proven/services"
    grep -q -- "--tls-domain /run/proven/tls.domain" "$app/etc/proven/services" \
        && grep -q -- "--acme-directory $acme " "$app/etc/proven/services" \
        || { echo "build.sh: no agent or provend line in services for" \
                  "PROVEN_IMAGE_ACME" >&2; exit 1; }
fi
cp "${PROVEN_IMAGE_NGINX_CONF:-$rootfs/nginx.conf}" \
    "$app/etc/proven/nginx.conf"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$app/etc/passwd"
printf 'root:x:0:\n' >"$app/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$app/etc/hosts"

# every file's mode as git keeps it (umask differs between machines), no
# set-id or sticky bit (an unprivileged unpacking drops them)
chmod -R u+rwX,go+rX,go-w,ug-s,-t "$boot" "$app"
chmod 700 "$app/root" "$app/var/lib/proven"
chmod 1777 "$app/tmp"

# what compiled ours (a rebuild elsewhere needs the same): into the
# metadata, which no PCR covers
info="gcc $(${CC:-cc} -dumpfullversion)"
info="$info; $(dpkg-query -W -f '${Package} ${Version}, ' libc6-dev \
    nginx-dev libcbor-dev libjansson-dev libssl-dev libsqlite3-dev \
    libuv1-dev libcurl4-openssl-dev libnats-dev zlib1g-dev libsodium-dev \
    2>/dev/null)"
info="${info%, }"

# the boot ramdisk's files are its own
overlap=$(comm -12 <(cd "$boot" && find . ! -type d | sort) \
                   <(cd "$app" && find . ! -type d | sort))
if [ -n "$overlap" ]; then
    echo "image: in both ramdisks (the application's would replace the" \
         "boot one's):" $overlap >&2
    exit 1
fi

SOURCE_DATE_EPOCH=0 "$bin/bin/proven" image build \
    --kernel "$kernel" --cmdline "$cmdline" --build-info "$info" \
    --ramdisk "$boot" --ramdisk "$app" --out "$out/proven.eif" \
    --memory 2048 --cpus 2
