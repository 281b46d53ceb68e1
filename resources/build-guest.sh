#!/usr/bin/env bash
# Build the vmm test guest from Debian 12 packages:
#
#   target/guest/bzImage            kernel of Debian's linux-image-amd64 (its versioned package)
#   target/guest/vmlinux            the same kernel uncompressed (ELF with a PVH entry note); no
#                                   decompression at boot, which takes about 7 s under QEMU's TCG
#                                   (resources/test-host.sh boots it)
#   target/guest/initramfs.cpio.gz  busybox (static) + /init + the drm/ttm/qxl, psmouse and
#                                   evdev modules (i8042, serio and atkbd are built in)
#   target/guest/manifest.txt       versions and sha256 of the .deb files used
#   target/guest/initramfs-patched-qxl.cpio.gz
#                                   with --patched-qxl: the same initramfs with the qxl module
#                                   built from guest-drivers/ (the patched drm/qxl driver) in
#                                   place of Debian's
#   resources/guest-packages.txt    the same record, committed with the sources
#
# Work files live in target/guest/cache/ (downloaded .debs, the extracted kernel package with
# a depmod'ed module tree that resources/test-host.sh reuses, and the initramfs staging tree).
#
# The guest's /init mounts proc/sys/devtmpfs/devpts, loads qxl, psmouse and evdev (and their
# dependencies), starts a shell on tty1 (the framebuffer console, where keys typed on the PS/2
# keyboard go) in the background, prints the line VMM-GUEST-READY on /dev/console, then either
# runs the command given on the kernel command line as vmm.run=word or vmm.run="several words",
# prints VMM-RUN-EXIT=<status> and powers off, or starts an interactive shell on the console and
# powers off when it exits.
#
# Usage: resources/build-guest.sh [--force] [--patched-qxl]
#   --force                      rebuild even when the outputs are up to date
#   --patched-qxl                also build initramfs-patched-qxl.cpio.gz (guest-drivers/build.sh
#                                compiles the module; it downloads Debian's linux-source and
#                                linux-headers for the guest kernel)
#   BUILD_GUEST_APT_UPDATE=1     run apt-get update first (to pick up newer package versions)
set -euo pipefail

readonly SCRIPT="${BASH_SOURCE[0]}"
REPO="$(cd "$(dirname "$SCRIPT")/.." && pwd)"
readonly REPO
readonly OUT="$REPO/target/guest"
readonly CACHE="$OUT/cache"
readonly DEBS="$CACHE/debs"
readonly KROOT="$CACHE/kernel"     # extracted linux-image package (modules depmod'ed)
readonly STAGE="$CACHE/initramfs"  # initramfs staging tree
readonly RECORD="$REPO/resources/guest-packages.txt"
# Modules loaded by /init; everything they depend on is added automatically. Debian builds the
# i8042 controller, serio, libps2 and the atkbd keyboard driver into the kernel (see
# modules.builtin); the PS/2 mouse driver and the /dev/input/event* interface are modules.
readonly GUEST_MODULES="qxl psmouse evdev"

log() { printf 'build-guest: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

force=0 patched_qxl=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        --patched-qxl) patched_qxl=1 ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$SCRIPT"; exit 0 ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

# Packs folder $1 into the gzipped initramfs $2. Fixed timestamps and sorted names make the
# archive reproducible.
pack_initramfs() {
    find "$1" -exec touch -h -d @0 {} +
    (
        cd "$1"
        find . -mindepth 1 -print0 | LC_ALL=C sort -z \
            | cpio --null --create --format=newc --owner=0:0 --reproducible --quiet
    ) | gzip -9n >"$2.tmp"
    mv "$2.tmp" "$2"
}

# The initramfs with the patched qxl module: the stock one unpacked, its qxl.ko replaced by
# the one guest-drivers/build.sh makes for the same kernel, and packed again.
build_patched_qxl() {
    local stock="$OUT/initramfs.cpio.gz" out="$OUT/initramfs-patched-qxl.cpio.gz"
    local tree="$CACHE/initramfs-patched-qxl" kver module ko f
    kver="$(awk '$1 == "kernel-release" { print $2 }' "$OUT/manifest.txt")"
    [[ -n $kver ]] || die "no kernel-release in $OUT/manifest.txt"
    if ((force == 0)) && [[ -f $out && $out -nt $stock && $out -nt $SCRIPT ]]; then
        local newer=0
        for f in "$REPO"/guest-drivers/build.sh "$REPO"/guest-drivers/qxl/patches/*.patch; do
            [[ $f -nt $out ]] && newer=1
        done
        if ((newer == 0)); then
            log "up to date: $out"
            return 0
        fi
    fi
    ko="$("$REPO/guest-drivers/build.sh" --release "$kver" \
        --version "$(awk -v p="linux-image-$kver" '$1 == p { print $2 }' "$OUT/manifest.txt")")"
    rm -rf "$tree"
    mkdir -p "$tree"
    (cd "$tree" && gzip -dc "$stock" | cpio --extract --make-directories --quiet)
    module="$(find "$tree/lib/modules/$kver" -name qxl.ko)"
    [[ -n $module ]] || die "no qxl.ko in $stock"
    cp "$ko" "$module"
    depmod -b "$tree" "$kver"
    pack_initramfs "$tree" "$out"
    log "done: $out (qxl.ko from guest-drivers/, $(git -C "$REPO" rev-parse --short HEAD \
        2>/dev/null || echo '?'))"
}

# --- host tools -------------------------------------------------------------------------------
need_root() {
    [[ $(id -u) == 0 ]] || die "must run as root $1"
}

apt_updated=0
apt_update() {
    need_root "to run apt-get update"
    if ((apt_updated == 0)); then
        log "apt-get update"
        apt-get update -qq >&2 || log "warning: apt-get update failed; using the existing lists"
        apt_updated=1
    fi
}

# Install the Debian packages that provide the given commands, when a command is missing.
# Arguments: pairs of COMMAND:PACKAGE.
need_tools() {
    local pair missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    ((${#missing[@]} == 0)) && return 0
    need_root "to install ${missing[*]}"
    log "installing ${missing[*]}"
    apt-cache policy "${missing[@]}" 2>/dev/null | grep 'Candidate: [0-9]' >/dev/null || apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2
}

if [[ ${BUILD_GUEST_APT_UPDATE:-0} == 1 ]]; then apt_update; fi
need_tools cpio:cpio xz:xz-utils depmod:kmod modprobe:kmod gzip:gzip flock:util-linux

mkdir -p "$OUT"
# One build at a time (resources/test-host.sh calls this script too).
exec 9>"$OUT/.lock"
flock 9

# --- which packages -----------------------------------------------------------------------------
# The candidate versions, from one apt-cache call (it is slow): print
# "META_VERSION KERNEL_PACKAGE KERNEL_VERSION BUSYBOX_VERSION", or fewer words when apt lacks one.
# linux-image-amd64 is a meta package that depends on exactly one linux-image-<abi>-amd64
# package, with an exact version: "Depends: linux-image-6.1.0-57-amd64 (= 6.1.192-3)".
candidates() {
    apt-cache show --no-all-versions linux-image-amd64 busybox-static 2>/dev/null | awk '
        /^Package: / { pkg = $2 }
        /^Version: / { ver[pkg] = $2 }
        /^Depends: / && pkg == "linux-image-amd64" {
            if (match($0, /linux-image-[0-9][^ ,]*-amd64 \(= [^)]*\)/)) {
                split(substr($0, RSTART, RLENGTH), d, /[ ()=]+/)
                kpkg = d[1]; kver = d[2]
            }
        }
        END { print ver["linux-image-amd64"], kpkg, kver, ver["busybox-static"] }'
}

read -r meta_version kernel_pkg kernel_version busybox_version < <(candidates) || true
if [[ -z ${busybox_version:-} ]]; then
    apt_update
    read -r meta_version kernel_pkg kernel_version busybox_version < <(candidates) || true
    [[ -n ${busybox_version:-} ]] \
        || die "apt knows no linux-image-amd64 or busybox-static (check the apt sources)"
fi
kver="${kernel_pkg#linux-image-}" # e.g. 6.1.0-57-amd64, the modules directory name

inputs="linux-image-amd64=$meta_version $kernel_pkg=$kernel_version"
inputs+=" busybox-static=$busybox_version"

# --- up to date? ------------------------------------------------------------------------------
up_to_date() {
    local f
    ((force == 0)) || return 1
    [[ -f $OUT/.inputs && $(<"$OUT/.inputs") == "$inputs" ]] || return 1
    [[ -f $KROOT/lib/modules/$kver/modules.dep && -f $RECORD ]] || return 1
    for f in "$OUT/bzImage" "$OUT/vmlinux" "$OUT/initramfs.cpio.gz" "$OUT/manifest.txt"; do
        [[ -f $f && $f -nt $SCRIPT ]] || return 1
    done
}
if up_to_date; then
    log "up to date ($kernel_pkg $kernel_version, busybox-static $busybox_version)"
    if ((patched_qxl)); then build_patched_qxl; fi
    exit 0
fi
need_root "to build the guest (it creates /dev/console in the initramfs)"
log "building the guest: $kernel_pkg $kernel_version, busybox-static $busybox_version"

# --- download -----------------------------------------------------------------------------------
# Download PACKAGE=VERSION into $DEBS (kept while the version stays the same); print its path.
download() {
    local pkg="$1" version="$2" deb
    # apt-get names the file with the epoch's colon escaped as %3a.
    deb="$DEBS/${pkg}_${version//:/%3a}_amd64.deb"
    if [[ ! -s $deb ]]; then
        mkdir -p "$DEBS"
        # Delete older versions of this package.
        find "$DEBS" -maxdepth 1 -name "${pkg}_*.deb" -delete
        # APT::Sandbox::User=root: the _apt user may not be able to write into target/.
        if ! (cd "$DEBS" && apt-get download -qq -o APT::Sandbox::User=root \
            "$pkg=$version" >&2); then
            # The lists may name a version the archive no longer has: refresh and retry once.
            apt_update
            (cd "$DEBS" && apt-get download -qq -o APT::Sandbox::User=root \
                "$pkg=$version" >&2) || die "cannot download $pkg=$version"
        fi
    fi
    [[ -s $deb ]] || die "apt-get download did not produce $deb"
    printf '%s\n' "$deb"
}

kernel_deb="$(download "$kernel_pkg" "$kernel_version")"
busybox_deb="$(download busybox-static "$busybox_version")"

# --- extract ------------------------------------------------------------------------------------
# The kernel package is extracted once per version; depmod builds its modules.dep so that
# modprobe -d can resolve dependencies (Debian generates it only when installing the package).
if [[ ! -f $KROOT/.done || $(<"$KROOT/.done") != "$kernel_pkg=$kernel_version" ]]; then
    log "extracting $(basename "$kernel_deb")"
    rm -rf "$KROOT"
    mkdir -p "$KROOT"
    dpkg-deb -x "$kernel_deb" "$KROOT"
    [[ -d $KROOT/lib/modules/$kver ]] || die "no lib/modules/$kver in $kernel_deb"
    depmod -b "$KROOT" "$kver"
    printf '%s\n' "$kernel_pkg=$kernel_version" >"$KROOT/.done"
fi
bbroot="$CACHE/busybox"
rm -rf "$bbroot"
dpkg-deb -x "$busybox_deb" "$bbroot"
[[ -x $bbroot/bin/busybox ]] || die "no bin/busybox in $busybox_deb"

# --- initramfs ----------------------------------------------------------------------------------
rm -rf "$STAGE"
mkdir -p "$STAGE"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,mnt}
chmod 1777 "$STAGE/tmp"
cp "$bbroot/bin/busybox" "$STAGE/bin/busybox"
# One symlink per applet, at the path busybox itself lists (bin/sh, sbin/modprobe, ...).
while IFS= read -r applet; do
    [[ -e $STAGE/$applet || -L $STAGE/$applet ]] || ln -s /bin/busybox "$STAGE/$applet"
done < <("$STAGE/bin/busybox" --list-full)
# The kernel opens /dev/console for init before init can mount devtmpfs.
mknod -m 600 "$STAGE/dev/console" c 5 1
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$STAGE/etc/passwd"
printf 'root:x:0:\ntty:x:5:\n' >"$STAGE/etc/group"

# Copy MODULE and all its dependencies from the kernel tree into the staging tree,
# decompressing .ko.xz/.ko.zst/.ko.gz (busybox modprobe loads plain .ko only).
# Prints the relative paths of the copied files.
copy_module_with_deps() {
    local deps line path rel dst
    deps="$(modprobe -d "$KROOT" -S "$kver" --show-depends "$1")" \
        || die "modprobe --show-depends $1 failed"
    while IFS= read -r line; do
        # "insmod /path/x.ko [params]" per module; "builtin x" needs nothing.
        [[ $line == insmod\ * ]] || continue
        path="${line#insmod }"
        path="${path%% *}"
        rel="${path#"$KROOT"/}"
        dst="$STAGE/${rel%.ko*}.ko"
        mkdir -p "$(dirname "$dst")"
        case "$rel" in
            *.ko) cp "$path" "$dst" ;;
            *.ko.xz) xz -dc "$path" >"$dst" ;;
            *.ko.zst) need_tools zstd:zstd; zstd -qdc "$path" >"$dst" ;;
            *.ko.gz) gzip -dc "$path" >"$dst" ;;
            *) die "unexpected module file $path" ;;
        esac
        printf '%s\n' "${dst#"$STAGE"/}"
    done <<<"$deps"
}

modules_dir="lib/modules/$kver"
mkdir -p "$STAGE/$modules_dir"
copied=()
for module in $GUEST_MODULES; do
    list="$(copy_module_with_deps "$module")"
    mapfile -t -O "${#copied[@]}" copied <<<"$list"
done
((${#copied[@]} > 0)) || die "no module files found for: $GUEST_MODULES"
for f in modules.order modules.builtin modules.builtin.modinfo; do
    if [[ -f $KROOT/$modules_dir/$f ]]; then cp "$KROOT/$modules_dir/$f" "$STAGE/$modules_dir/"; fi
done
# modules.order names the packaged (possibly compressed) files; name the decompressed ones.
touch "$STAGE/$modules_dir/modules.order"
sed -i 's/\.ko\.\(xz\|zst\|gz\)$/.ko/' "$STAGE/$modules_dir/modules.order"
depmod -b "$STAGE" "$kver"

cat >"$STAGE/init" <<'EOF'
#!/bin/sh
# /init of the vmm test guest, generated by resources/build-guest.sh.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
export TERM="${TERM:-linux}"

mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o nosuid,mode=755 devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o nosuid,noexec,gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp
mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs /run
# All output goes to the kernel console (ttyS0 when the kernel has console=ttyS0).
exec </dev/console >/dev/console 2>&1

hostname vmm-guest
ip link set lo up 2>/dev/null

# Load the modules; a missing one is reported but does not stop the boot.
for module in @GUEST_MODULES@; do
    modprobe "$module" || echo "vmm-guest: warning: cannot load module $module"
done

# Wait until everything written to the console has left the UART: the power-off comes right
# after the last line. stty -F sets the terminal with TCSADRAIN; tostop is off already.
drain_console() {
    stty -F /dev/console -tostop 2>/dev/null || sleep 1
}

power_off() {
    drain_console
    sync
    poweroff -f
    # Not reached; keep PID 1 alive if the power-off did not happen.
    while :; do sleep 3600; done
}

# A shell on tty1, the framebuffer console that the keyboard types into. The session leader
# opens tty1 first, which makes it the shell's controlling terminal (job control, Ctrl-C).
setsid sh -c 'exec sh -i </dev/tty1 >/dev/tty1 2>&1' &

echo VMM-GUEST-READY

# vmm.run="several words" (the quotes stay in /proc/cmdline) or vmm.run=word.
cmdline="$(cat /proc/cmdline)"
case " $cmdline" in
*' vmm.run='*)
    run="$(sed -n 's/^\(.* \)\{0,1\}vmm\.run="\([^"]*\)".*$/\2/p' /proc/cmdline)"
    if [ -z "$run" ]; then
        run="$(sed -n 's/^\(.* \)\{0,1\}vmm\.run=\([^ ]*\).*$/\2/p' /proc/cmdline)"
        [ "$run" = '""' ] && run=
    fi
    setsid cttyhack sh -c "$run"
    echo "VMM-RUN-EXIT=$?"
    power_off
    ;;
esac

# Interactive: a shell with job control on the console; power off when it exits.
setsid cttyhack sh -l
power_off
EOF
sed -i "s/@GUEST_MODULES@/$GUEST_MODULES/" "$STAGE/init"
chmod 755 "$STAGE/init"

log "packing the initramfs (modules: $(basename -a "${copied[@]}" | tr '\n' ' '| sed 's/ $//'))"
pack_initramfs "$STAGE" "$OUT/initramfs.cpio.gz"
cp "$KROOT/boot/vmlinuz-$kver" "$OUT/bzImage.tmp"
mv "$OUT/bzImage.tmp" "$OUT/bzImage"

# vmlinux: the bzImage's compressed payload, uncompressed. The boot protocol header gives its
# place: it starts payload_offset (u32 at 0x248) bytes after the real-mode setup code, which is
# setup_sects (u8 at 0x1f1; 0 means 4) + 1 sectors of 512 bytes. Its last 4 bytes are the
# uncompressed size, which the decompressors would take for a truncated second stream.
read_le() { od -An -t "u$2" -j "$1" -N "$2" "$OUT/bzImage" | tr -d ' '; }
setup_sects="$(read_le $((0x1f1)) 1)"
((setup_sects != 0)) || setup_sects=4
payload_start=$(((setup_sects + 1) * 512 + $(read_le $((0x248)) 4)))
payload_length=$(($(read_le $((0x24c)) 4) - 4))
payload() {
    dd if="$OUT/bzImage" iflag=skip_bytes,count_bytes skip="$payload_start" \
        count="$payload_length" bs=1M status=none
}
case "$(payload | od -An -tx1 -N4 | tr -d ' ')" in
    fd377a58) payload | xz -dc >"$OUT/vmlinux.tmp" ;;
    1f8b*) payload | gzip -dc >"$OUT/vmlinux.tmp" ;;
    28b52ffd) need_tools zstd:zstd; payload | zstd -qdc >"$OUT/vmlinux.tmp" ;;
    *) die "unknown compression of the kernel payload in $OUT/bzImage" ;;
esac
[[ $(od -An -c -N4 "$OUT/vmlinux.tmp" | tr -d ' ') == '177ELF' ]] \
    || die "the kernel payload is not an ELF file"
mv "$OUT/vmlinux.tmp" "$OUT/vmlinux"

# --- records ----------------------------------------------------------------------------------
record_lines() {
    local pkg version deb
    for entry in "$kernel_pkg $kernel_version $kernel_deb" \
        "busybox-static $busybox_version $busybox_deb"; do
        read -r pkg version deb <<<"$entry"
        printf '%s %s %s\n' "$pkg" "$version" "$(sha256sum "$deb" | cut -d' ' -f1)"
    done
}
packages="$(record_lines)"
{
    printf '# vmm test guest, built by resources/build-guest.sh on %s\n' "$(date -u +%FT%TZ)"
    printf 'kernel-release %s\n' "$kver"
    printf 'kernel-selected-by linux-image-amd64 %s\n' "$meta_version"
    printf 'modules %s\n' "$(basename -a "${copied[@]}" | tr '\n' ' ' | sed 's/ $//')"
    printf 'host-tools'
    for p in cpio kmod xz-utils gzip; do
        printf ' %s=%s' "$p" "$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || echo '?')"
    done
    printf '\n# package version sha256 (of the .deb)\n%s\n' "$packages"
    printf '# outputs: sha256\n'
    (cd "$OUT" && sha256sum bzImage vmlinux initramfs.cpio.gz)
} >"$OUT/manifest.txt"
{
    printf '# Debian packages that resources/build-guest.sh used for target/guest/ (generated).\n'
    printf '# package version sha256-of-the-.deb\n%s\n' "$packages"
} >"$RECORD"
printf '%s\n' "$inputs" >"$OUT/.inputs"

cat "$OUT/manifest.txt"
log "done: $(cd "$OUT" && du -h bzImage vmlinux initramfs.cpio.gz \
    | awk '{ printf "%s%s (%s)", sep, $2, $1; sep = ", " }') in $OUT"
if ((patched_qxl)); then build_patched_qxl; fi
