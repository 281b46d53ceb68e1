#!/usr/bin/env bash
# Builds the guest's drm/qxl driver with the patches in guest-drivers/qxl/patches/ applied, as
# an out-of-tree module (qxl.ko) for one Debian kernel:
#
#   the driver source   drivers/gpu/drm/qxl from Debian's linux-source-<major.minor> package
#   the build tree      Debian's linux-headers-<release> (+ its -common and linux-kbuild)
#
# Both come from Debian's archive at the kernel package's exact version, downloaded into
# target/guest-drivers/cache/ and unpacked there (nothing is installed into /usr/src), unless
# --headers and --source name ones already on the machine (for example inside a Debian guest:
# --headers /usr/src/linux-headers-$(uname -r) --source /usr/src/linux-source-6.1.tar.xz).
# The module is written to target/guest-drivers/<release>/qxl.ko and its path printed last.
#
# Usage: guest-drivers/build.sh [options]
#   --release R      kernel release, e.g. 6.1.0-57-amd64 (default: the test guest's kernel in
#                    resources/guest-packages.txt)
#   --version V      Debian version of that kernel's packages, e.g. 6.1.192-3 (same default)
#   --headers DIR    a prepared linux-headers tree for the release (no download)
#   --source TAR     a linux-source tarball holding drivers/gpu/drm/qxl (no download)
#   --out DIR        where to put qxl.ko (default: target/guest-drivers/<release>)
#   --stock          build the unpatched driver (for comparisons)
set -euo pipefail

readonly SCRIPT="${BASH_SOURCE[0]}"
REPO="$(cd "$(dirname "$SCRIPT")/.." && pwd)"
readonly REPO
readonly PATCHES="$REPO/guest-drivers/qxl/patches"
readonly CACHE="$REPO/target/guest-drivers/cache"
readonly DRIVER_DIR="drivers/gpu/drm/qxl"

log() { printf 'guest-drivers: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

release="" version="" headers="" source_tar="" out="" stock=0
while (($# > 0)); do
    case "$1" in
        --release) release="${2:?--release needs a value}"; shift 2 ;;
        --version) version="${2:?--version needs a value}"; shift 2 ;;
        --headers) headers="${2:?--headers needs a directory}"; shift 2 ;;
        --source) source_tar="${2:?--source needs a tarball}"; shift 2 ;;
        --out) out="${2:?--out needs a directory}"; shift 2 ;;
        --stock) stock=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$SCRIPT"; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
done

# The kernel: a given headers tree says which it is; otherwise the test guest's, as
# resources/build-guest.sh recorded it: "linux-image-6.1.0-57-amd64 6.1.192-3 <sha256>".
if [[ -z $release && -n $headers ]]; then
    # Debian's headers name it in .kernelvariables ("override KERNELRELEASE = 6.1.0-57-amd64").
    release="$(awk '$2 == "KERNELRELEASE" { print $NF }' "$headers/.kernelvariables" \
        2>/dev/null || true)"
    [[ -n $release ]] || die "cannot tell the kernel release of $headers; give --release"
fi
if [[ -n $headers && -n $source_tar ]]; then
    : # nothing to download: the version does not matter
elif [[ -z $release || -z $version ]]; then
    read -r pkg ver _ < <(grep '^linux-image-' "$REPO/resources/guest-packages.txt") \
        || die "no kernel in resources/guest-packages.txt; give --release and --version"
    release="${release:-${pkg#linux-image-}}"
    version="${version:-$ver}"
fi
# The package names: linux-headers-6.1.0-57-amd64 needs linux-headers-6.1.0-57-common and
# linux-kbuild-6.1; the source is linux-source-6.1.
series="" abi=""
if [[ $release =~ ^([0-9]+\.[0-9]+)\.[0-9]+-[0-9]+-([a-z0-9]+)$ ]]; then
    series="${BASH_REMATCH[1]}"
    abi="${release%-"${BASH_REMATCH[2]}"}"
elif [[ -z $headers || -z $source_tar ]]; then
    die "unexpected kernel release '$release' (expected e.g. 6.1.0-57-amd64)"
fi
out="${out:-$REPO/target/guest-drivers/$release}"
if ((stock)); then out="${out%/}-stock"; fi

need_tools() {
    local pair missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    ((${#missing[@]} == 0)) && return 0
    [[ $(id -u) == 0 ]] || die "missing ${missing[*]}; install them (as root) and run again"
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2
}
# Debian's 6.1 kernels are built with gcc-12; the headers' Makefile asks for it by name.
need_tools make:make gcc-12:gcc-12 xz:xz-utils patch:patch modinfo:kmod

# Download PACKAGE=VERSION into the cache (kept while the version stays the same); print it.
download() {
    local pkg="$1" deb
    deb="$(find "$CACHE/debs" -maxdepth 1 -name "${pkg}_${version}_*.deb" 2>/dev/null | head -n1)"
    if [[ -z $deb ]]; then
        mkdir -p "$CACHE/debs"
        log "downloading $pkg=$version"
        (cd "$CACHE/debs" && apt-get download -qq -o APT::Sandbox::User=root \
            "$pkg=$version" >&2) || die "cannot download $pkg=$version (try apt-get update)"
        deb="$(find "$CACHE/debs" -maxdepth 1 -name "${pkg}_${version}_*.deb" | head -n1)"
    fi
    [[ -n $deb ]] || die "apt-get download left no ${pkg}_${version}_*.deb"
    printf '%s\n' "$deb"
}

# Debian's headers tree for the release, unpacked into the cache. Its Makefile includes the
# -common tree by absolute path under /usr/src; point it at the unpacked copy instead.
prepare_headers() {
    local root="$CACHE/headers-$release-$version" deb
    if [[ ! -f $root/.done ]]; then
        rm -rf "$root"
        mkdir -p "$root"
        for deb in "linux-headers-$release" "linux-headers-$abi-common" "linux-kbuild-$series"; do
            dpkg-deb -x "$(download "$deb")" "$root"
        done
        sed -i "s|^include /usr/src/|include $root/usr/src/|" \
            "$root/usr/src/linux-headers-$release/Makefile"
        touch "$root/.done"
    fi
    printf '%s\n' "$root/usr/src/linux-headers-$release"
}

# The driver's source from the linux-source tarball.
prepare_source() {
    local tarball="$1" dir="$2"
    rm -rf "$dir"
    mkdir -p "$dir"
    log "unpacking $DRIVER_DIR from $(basename "$tarball")"
    # The tarball's one top-level folder (linux-source-6.1/) is dropped.
    tar -xaf "$tarball" -C "$dir" --strip-components=1 --wildcards "*/$DRIVER_DIR/*"
    [[ -f $dir/$DRIVER_DIR/qxl_drv.c ]] || die "no $DRIVER_DIR in $tarball"
}

if [[ -z $headers ]]; then headers="$(prepare_headers)"; fi
[[ -f $headers/Makefile && -f $headers/Module.symvers ]] \
    || die "$headers is not a prepared kernel headers tree (no Makefile or Module.symvers)"

if [[ -z $source_tar ]]; then
    src_deb="$(download "linux-source-$series")"
    source_tar="$CACHE/linux-source-$series-$version.tar.xz"
    if [[ ! -s $source_tar ]]; then
        log "extracting the source tarball from $(basename "$src_deb")"
        dpkg-deb --fsys-tarfile "$src_deb" \
            | tar -xO "./usr/src/linux-source-$series.tar.xz" >"$source_tar.tmp"
        mv "$source_tar.tmp" "$source_tar"
    fi
fi
[[ -s $source_tar ]] || die "no such tarball: $source_tar"

work="$CACHE/build-$release$( ((stock)) && echo -stock || true)"
prepare_source "$source_tar" "$work"
if ((stock == 0)); then
    for patch in "$PATCHES"/*.patch; do
        log "applying $(basename "$patch")"
        patch -d "$work" -p1 --forward --batch --quiet <"$patch" \
            || die "$(basename "$patch") does not apply to the driver in $(basename "$source_tar")"
    done
fi

log "building qxl.ko against $headers"
# Without the kernel's vmlinux kbuild skips the module's BTF and says so: not an error.
if ! make -s -C "$headers" M="$work/$DRIVER_DIR" modules >"$work/build.log" 2>&1; then
    cat "$work/build.log" >&2
    die "the module build failed"
fi
grep -v 'BTF' "$work/build.log" >&2 || true
mkdir -p "$out"
cp "$work/$DRIVER_DIR/qxl.ko" "$out/qxl.ko"
# As Debian ships its modules: without debugging information.
strip --strip-debug "$out/qxl.ko"
modinfo -F vermagic "$out/qxl.ko" 2>/dev/null | grep -q "^$release " \
    || die "$out/qxl.ko was not built for $release"
what="the stock driver"
if ((stock == 0)); then
    what="the driver with $(find "$PATCHES" -name '*.patch' | wc -l) patches"
fi
log "built $what for $release: $out/qxl.ko"
printf '%s\n' "$out/qxl.ko"
