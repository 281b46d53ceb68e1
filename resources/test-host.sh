#!/usr/bin/env bash
# Run a command inside a "test host": a Debian kernel booted under QEMU's TCG with emulated AMD
# SVM, so that it has a working /dev/kvm (nested KVM), whatever the machine's own KVM can do.
#
# Usage: resources/test-host.sh CMD [ARGS...]
#
# CMD runs as root in a chroot into this machine's / (shared read-only over 9p), in the caller's
# current directory, with the caller's PATH, HOME, TERM, CI, RUST_LOG, RUST_BACKTRACE and VMM_*
# and TEST_* variables. /proc, /sys, /dev (devtmpfs, with /dev/kvm), /dev/pts, /dev/shm, /tmp and
# /run are the test host's own; /tmp and /run are empty tmpfs. Build outside, run inside.
# The script exits with CMD's exit status; CMD's stdout and stderr go to the script's stdout.
# The script's own messages, which start with "test-host:", go to stderr.
#
# Exit status: CMD's; 124 when the deadline passed (QEMU is killed); 125 when the test host
# stopped before CMD finished (kernel panic, a setup step failed, no /dev/kvm, ...).
#
# Environment:
#   TEST_HOST_SCRATCH  a writable folder shared with the test host at the same absolute path
#                      (default: a new folder under target/test-host/, printed on stderr);
#                      inside, TEST_HOST_SCRATCH names it
#   TEST_HOST_TIMEOUT  deadline in seconds for the whole run (default 900)
#   TEST_HOST_MEM      test host memory in MiB (default 3072)
#   TEST_HOST_FORWARD  TCP ports to forward from 127.0.0.1:PORT here to PORT in the test host,
#                      space separated (e.g. "5900 5901"); the test host is 10.0.2.15 and
#                      reaches nothing outside (QEMU user networking with restrict=on)
#   TEST_HOST_DEBUG=1  full kernel log; keep the run's control files and print where they are
#
# Terminal: CMD's input and output pass through the test host's console, a virtio console
# (hvc0) on QEMU's stdio; the test host's kernel messages go to a log file (shown when it
# fails). When stdin is a terminal, hvc0 is CMD's controlling terminal (job control, ^C,
# window size; QEMU puts the terminal in raw mode, restored afterwards). Otherwise CMD's
# stdin and stdout are pipes, as in CI: it reads the script's stdin exactly, streamed, with
# an end of file at its end (at once for /dev/null), and its output passes unchanged.
#
# Inside, / and so HOME are read-only; write to TEST_HOST_SCRATCH, /tmp or /run. The
# repository and the current directory stay visible even when they live under /tmp or /run.
set -euo pipefail

readonly SCRIPT="${BASH_SOURCE[0]}"
RESOURCES="$(cd "$(dirname "$SCRIPT")" && pwd)"
readonly RESOURCES
REPO="$(dirname "$RESOURCES")"
readonly REPO
readonly OUT="$REPO/target/test-host"
readonly GUEST="$REPO/target/guest"
readonly KROOT="$GUEST/cache/kernel"        # extracted kernel package, from build-guest.sh
readonly BUSYBOX="$GUEST/cache/busybox/bin/busybox"
# Modules the test host loads (their dependencies come along, in dependency order).
readonly HOST_MODULES="virtio_pci virtio_console 9pnet_virtio 9p kvm_amd virtio_net"
readonly MSIZE=512000 # the largest 9p message size Linux's virtio transport accepts

usage() {
    echo "usage: resources/test-host.sh CMD [ARGS...]   (runs CMD in a nested-KVM test host;"
    echo "       see the comments at the top of the script for the environment variables)"
}
log() { printf 'test-host: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 125; }

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") usage >&2; exit 2 ;;
esac
# A closed stdin reads as empty.
{ true <&0; } 2>/dev/null || exec </dev/null

timeout_s="${TEST_HOST_TIMEOUT:-900}"
mem="${TEST_HOST_MEM:-3072}"
forward="${TEST_HOST_FORWARD:-}"
debug="${TEST_HOST_DEBUG:-0}"
[[ $timeout_s =~ ^[1-9][0-9]*$ ]] || die "TEST_HOST_TIMEOUT must be a number of seconds"
[[ $mem =~ ^[1-9][0-9]*$ ]] || die "TEST_HOST_MEM must be a number of MiB"
for port in $forward; do
    if ! [[ $port =~ ^[1-9][0-9]*$ ]] || ((port > 65535)); then
        die "bad port in TEST_HOST_FORWARD: $port"
    fi
done

# --- QEMU from bookworm-backports ---------------------------------------------------------------
# Print a deb822 sources entry for bookworm-backports that reuses the URIs, components and key
# of the machine's Debian "bookworm" entry in deb822 FILE.
backports_entry_deb822() {
    awk '
        BEGIN { RS = ""; FS = "\n" }
        {
            delete f; key = ""
            for (i = 1; i <= NF; i++) {
                if ($i ~ /^#/) continue
                if ($i ~ /^[ \t]/ && key != "") { f[key] = f[key] "\n" $i; continue }
                split($i, kv, ":"); key = kv[1]
                f[key] = $i; sub(/^[^:]*:[ \t]*/, "", f[key])
            }
            if (f["Enabled"] == "no" || (" " f["Types"] " ") !~ / deb /) next
            if ((" " f["Suites"] " ") !~ /[ \t]bookworm[ \t]/) next
            print "Types: deb"
            print "URIs: " f["URIs"]
            print "Suites: bookworm-backports"
            print "Components: " f["Components"]
            if ("Signed-By" in f) print "Signed-By: " f["Signed-By"]
            found = 1; exit
        }
        END { exit !found }' "$1"
}

# Same for a one-line-style FILE: "deb [options] URI bookworm components".
backports_entry_oneline() {
    awk '$1 == "deb" {
            for (i = 2; i <= NF; i++) if ($i == "bookworm") {
                $i = "bookworm-backports"; print; found = 1; exit
            }
        }
        END { exit !found }' "$1"
}

ensure_qemu() {
    command -v qemu-system-x86_64 >/dev/null && return 0
    [[ $(id -u) == 0 ]] || die "qemu-system-x86_64 is missing; run as root to install it"
    local lists=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list
        /etc/apt/sources.list.d/*.sources)
    if ! grep -qsE '^[^#]*bookworm-backports' "${lists[@]}"; then
        local deb822=/etc/apt/sources.list.d/debian.sources entry
        if [[ -f $deb822 ]] && entry="$(backports_entry_deb822 "$deb822")"; then
            printf '%s\n' "$entry" >/etc/apt/sources.list.d/bookworm-backports.sources
        elif [[ -f /etc/apt/sources.list ]] \
            && entry="$(backports_entry_oneline /etc/apt/sources.list)"; then
            printf '%s\n' "$entry" >/etc/apt/sources.list.d/bookworm-backports.list
        else
            die "no Debian bookworm entry in the apt sources to derive bookworm-backports from"
        fi
        log "added bookworm-backports to the apt sources"
    fi
    log "installing qemu-system-x86 from bookworm-backports"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends -t bookworm-backports qemu-system-x86; } >"$OUT/apt.log" 2>&1
    then
        cat "$OUT/apt.log" >&2
        die "cannot install qemu-system-x86 from bookworm-backports"
    fi
    command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 still missing"
}

# --- kernel and initramfs -----------------------------------------------------------------------
# The kernel is the guest's (build-guest.sh downloads and extracts it; it is quick when up to
# date). Its messages go to stderr: stdout is CMD's.
"$RESOURCES/build-guest.sh" >&2 || die "resources/build-guest.sh failed"
kver="$(sed -n 's/^kernel-release //p' "$GUEST/manifest.txt")"
[[ -n $kver && -d $KROOT/lib/modules/$kver && -x $BUSYBOX && -f $GUEST/vmlinux ]] \
    || die "target/guest/ lacks the extracted kernel or busybox; run resources/build-guest.sh"

# Write the test host's /init to FILE.
write_init() {
    cat >"$1" <<'EOF'
#!/bin/sh
# /init of the vmm test host, generated by resources/test-host.sh.
# The kernel console (ttyS0) goes to a log file outside; CMD's terminal is hvc0, a virtio
# console on the script's stdin and stdout.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

stage() { echo "test-host-stage: $* (uptime $(cut -d' ' -f1 /proc/uptime) s)"; }
off() {
    sync
    poweroff -f
    while :; do sleep 3600; done
}
ctl=
# A setup step failed: tell the script outside (through the scratch share once it is
# mounted), then power off.
fail() {
    echo "test-host: error: $*"
    if [ -n "$ctl" ]; then echo "$*" >"$ctl/error"; fi
    off
}

stage "init started"
for module in virtio_pci virtio_console 9pnet_virtio 9p; do
    modprobe "$module" || fail "cannot load module $module"
done
hostname test-host
ip link set lo up

# The scratch share holds the run's control folder, named on the kernel command line.
opts="trans=virtio,version=9p2000.L,msize=@MSIZE@"
ctlname="$(sed -n 's/^.*th\.ctl=\([^ ]*\).*$/\1/p' /proc/cmdline)"
mkdir -p /scratch /newroot
mount -t 9p -o "$opts,cache=none" scratch /scratch || fail "cannot mount the scratch share"
ctl="/scratch/$ctlname"
[ -n "$ctlname" ] && [ -f "$ctl/cmd.sh" ] || fail "no control folder $ctlname in the scratch share"
IFS= read -r scratch <"$ctl/scratch"
read -r mode rows cols <"$ctl/terminal"
read -r forward <"$ctl/forward" || true

# KVM once failures can be reported through the scratch share.
modprobe kvm_amd || fail "cannot load kvm_amd, so no /dev/kvm (no SVM in the test host's CPU?)"
[ -c /dev/kvm ] || fail "/dev/kvm is missing after loading kvm_amd"
stage "modules loaded"

# This machine's / read-only; caching is safe as nothing in the test host can change it.
mount -t 9p -o "$opts,ro,cache=loose" host /newroot || fail "cannot mount the host's /"
r=/newroot
# Folders of the caller's under /tmp or /run (a checkout there) would vanish under the tmpfs
# mounted below: hold them aside and put them back on top.
n=0
while IFS= read -r keep; do
    n=$((n + 1))
    mkdir -p "/keep/$n" && mount -o bind "$r$keep" "/keep/$n" ||
        fail "cannot keep $keep visible in the test host"
done <"$ctl/keep"
mount -t proc -o nosuid,nodev,noexec proc $r/proc &&
    mount -t sysfs -o nosuid,nodev,noexec sysfs $r/sys &&
    mount -t devtmpfs -o nosuid,mode=755 devtmpfs $r/dev &&
    mkdir -p $r/dev/pts $r/dev/shm &&
    mount -t devpts -o nosuid,noexec,gid=5,mode=620,ptmxmode=666 devpts $r/dev/pts &&
    mount -t tmpfs -o nosuid,nodev,mode=1777 shm $r/dev/shm &&
    mount -t tmpfs -o nosuid,nodev,mode=1777 tmp $r/tmp &&
    mount -t tmpfs -o nosuid,nodev,mode=755 run $r/run ||
    fail "cannot mount proc, sys, dev, tmp or run in the chroot"
n=0
while IFS= read -r keep; do
    n=$((n + 1))
    mkdir -p "$r$keep" && mount -o move "/keep/$n" "$r$keep" ||
        fail "cannot put $keep back in the test host"
done <"$ctl/keep"
# The scratch share goes to the same path as outside, after /tmp and /run are mounted.
mkdir -p "$r$scratch" 2>/dev/null
mount -o move /scratch "$r$scratch" || fail "cannot move the scratch share to $scratch"
ctl="$r$scratch/$ctlname"
stage "root mounted"

if [ -n "$forward" ]; then
    modprobe virtio_net || fail "cannot load module virtio_net"
    ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up ||
        fail "cannot configure eth0 for the port forwarding"
fi

# CMD's terminal is hvc0, a virtio console: under TCG a serial port lost input (beyond about
# 64 KiB); the virtio console leaves input in its queue until the terminal has room.
# Init keeps it open: the last close would reset the terminal settings.
tries=0
until exec 3<>/dev/hvc0; do
    tries=$((tries + 1))
    [ $tries -lt 100 ] || fail "no /dev/hvc0 (virtio console)"
    sleep 0.05
done 2>/dev/null
cmd="$scratch/$ctlname/cmd.sh"
if [ "$mode" = tty ]; then
    # Interactive: hvc0 is CMD's controlling terminal.
    stty -F /dev/hvc0 sane rows "$rows" cols "$cols"
    : >"$ctl/ready"
    stage "CMD started"
    setsid -c chroot $r /usr/bin/env -i /bin/bash "$cmd" </dev/hvc0 >/dev/hvc0 2>&1 3>&-
    status=$?
else
    # Not interactive: CMD's input and output are pipes, relayed to and from hvc0 (raw).
    # The input comes in chunks, each a line with its size and then that many bytes; size 0
    # is the end of the input. This gives exact bytes and an end of file, which a terminal
    # cannot. (ash's read takes one byte at a time and dd's fullblock no more than asked.)
    # The output through cat gets written in large pieces even when CMD writes many small
    # ones (each write to hvc0 costs a VM exit, slow under TCG).
    stty -F /dev/hvc0 raw -echo
    mkfifo /run/stdin /run/stdout
    while read -r size && [ "$size" -gt 0 ]; do
        dd bs="$size" count=1 iflag=fullblock status=none
    done </dev/hvc0 >/run/stdin 2>/dev/null 3>&- &
    cat /run/stdout >/dev/hvc0 3>&- &
    relay=$!
    : >"$ctl/ready"
    stage "CMD started"
    setsid chroot $r /usr/bin/env -i /bin/bash "$cmd" </run/stdin >/run/stdout 2>&1 3>&-
    status=$?
    # The relay ends with CMD's output; processes CMD left running with it open get 3 s.
    (sleep 3; kill $relay) 2>/dev/null &
    wait $relay
fi
# Let all of CMD's output leave before the power-off (stty drains the terminal).
stty -F /dev/hvc0 -tostop
stage "CMD finished with status $status"
echo "$status" >"$ctl/status.tmp" && mv "$ctl/status.tmp" "$ctl/status"
off
EOF
    sed -i "s/@MSIZE@/$MSIZE/" "$1"
}

# Build target/test-host/initramfs.cpio.gz: busybox, the modules and /init.
build_initramfs() {
    local stage="$OUT/initramfs" list paths=() path rel dst module
    log "building the test host initramfs ($kver)"
    rm -rf "$stage"
    mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run}
    cp "$BUSYBOX" "$stage/bin/busybox"
    while IFS= read -r applet; do
        [[ -e $stage/$applet || -L $stage/$applet ]] || ln -s /bin/busybox "$stage/$applet"
    done < <("$stage/bin/busybox" --list-full)
    mknod -m 600 "$stage/dev/console" c 5 1
    # The modules and their dependencies, each once, in dependency order.
    for module in $HOST_MODULES; do
        list="$(modprobe -d "$KROOT" -S "$kver" --show-depends "$module")" \
            || die "modprobe --show-depends $module failed"
        while read -r _ path _; do
            [[ $path == /* && " ${paths[*]} " != *" $path "* ]] && paths+=("$path")
        done <<<"$(grep '^insmod ' <<<"$list")"
    done
    for path in "${paths[@]}"; do
        rel="${path#"$KROOT"/}"
        dst="$stage/${rel%.ko*}.ko"
        mkdir -p "$(dirname "$dst")"
        case "$rel" in # busybox modprobe loads plain .ko files only
            *.ko) cp "$path" "$dst" ;;
            *.ko.xz) xz -dc "$path" >"$dst" ;;
            *.ko.zst) zstd -qdc "$path" >"$dst" ;; # build-guest.sh installed zstd then
            *.ko.gz) gzip -dc "$path" >"$dst" ;;
            *) die "unexpected module file $path" ;;
        esac
    done
    cp "$KROOT/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} \
        "$stage/lib/modules/$kver/"
    sed -i 's/\.ko\.\(xz\|zst\|gz\)$/.ko/' "$stage/lib/modules/$kver/modules.order"
    depmod -b "$stage" "$kver"
    write_init "$stage/init"
    chmod 755 "$stage/init"
    find "$stage" -exec touch -h -d @0 {} +
    (cd "$stage" && find . -mindepth 1 -print0 | LC_ALL=C sort -z \
        | cpio --null --create --format=newc --owner=0:0 --reproducible --quiet) \
        | gzip -9n >"$OUT/initramfs.cpio.gz.tmp"
    mv "$OUT/initramfs.cpio.gz.tmp" "$OUT/initramfs.cpio.gz"
    log "modules: $(basename -a "${paths[@]}" | tr '\n' ' ' | sed 's/ $//')"
}

mkdir -p "$OUT"
(
    # One build at a time; rebuilt when this script or the kernel changes.
    flock 9
    inputs="$kver $(sed -n 's/^busybox-static \([^ ]*\) .*/\1/p' "$GUEST/manifest.txt")"
    inputs+=" $HOST_MODULES"
    if [[ ! -f $OUT/initramfs.cpio.gz || ! $OUT/initramfs.cpio.gz -nt $SCRIPT \
        || ! -f $OUT/.inputs || $(<"$OUT/.inputs") != "$inputs" ]]; then
        build_initramfs
        printf '%s\n' "$inputs" >"$OUT/.inputs"
    fi
) 9>"$OUT/.lock"
ensure_qemu

# --- the run's folders ----------------------------------------------------------------------------
own_scratch=0
if [[ -n ${TEST_HOST_SCRATCH:-} ]]; then
    [[ -d $TEST_HOST_SCRATCH ]] || die "TEST_HOST_SCRATCH=$TEST_HOST_SCRATCH is not a folder"
    scratch="$(realpath "$TEST_HOST_SCRATCH")"
else
    scratch="$(mktemp -d "$OUT/scratch.XXXXXX")"
    own_scratch=1
    log "scratch folder: $scratch"
fi
[[ $scratch != *$'\n'* ]] || die "the scratch folder's path contains a newline"
# ctl: shared with the test host (CMD as a script, its status); priv: for this side only.
ctl="$(mktemp -d "$scratch/.test-host.XXXXXX")"
priv="$(mktemp -d "$OUT/run.XXXXXX")"

# The repository and the caller's directory, when they live under /tmp or /run, which the
# test host covers with its own tmpfs.
for dir in "$REPO" "$PWD"; do
    case "$dir/" in
        /tmp/* | /run/*) printf '%s\n' "$dir" ;;
    esac
done | sort -u >"$ctl/keep"

# CMD as a script: the caller's directory and environment, then CMD with its arguments.
{
    echo "# CMD for the test host, generated by resources/test-host.sh"
    export TEST_HOST_SCRATCH="$scratch"
    while IFS= read -r name; do
        case "$name" in
            PATH | HOME | TERM | CI | RUST_LOG | RUST_BACKTRACE | VMM_* | TEST_*)
                printf 'export %s=%q\n' "$name" "${!name}" ;;
        esac
    done < <(compgen -e)
    printf 'cd -- %q 2>/dev/null || {\n' "$PWD"
    printf '    echo %q >%q\n' "cannot change to the current directory $PWD in the test host" \
        "$ctl/error"
    printf '    exit 125\n}\n'
    printf '%q ' "$@"
    echo
} >"$ctl/cmd.sh"
printf '%s\n' "$scratch" >"$ctl/scratch"
printf '%s\n' "$forward" >"$ctl/forward"
interactive=0
if [[ -t 0 ]]; then
    interactive=1
    read -r rows cols < <(stty size 2>/dev/null || echo "24 80")
    echo "tty $rows $cols" >"$ctl/terminal"
else
    echo "pipe 0 0" >"$ctl/terminal"
fi

# --- QEMU -----------------------------------------------------------------------------------------
qemu_path() { printf '%s' "${1//,/,,}"; } # a comma in a QEMU option value is written twice
append="console=ttyS0 panic=-1 oops=panic nowatchdog th.ctl=$(basename "$ctl")"
if [[ $debug == 1 ]]; then append+=" loglevel=7"; else append+=" quiet loglevel=4"; fi
scratch_opts="security_model=none,multidevs=remap"
# shellcheck disable=SC2054 # commas separate QEMU suboptions, not array elements
qemu=(
    qemu-system-x86_64
    -accel tcg,thread=multi -cpu EPYC,+svm,+npt -smp 2 -m "$mem"
    # -display none rather than -nographic, which would have the firmware print on stdout.
    -nodefaults -no-user-config -display none -no-reboot
    # The uncompressed kernel (PVH boot): decompressing the bzImage takes about 7 s under TCG.
    -kernel "$GUEST/vmlinux" -initrd "$OUT/initramfs.cpio.gz" -append "$append"
    # CMD's terminal (hvc0) on stdio, ^C included; the kernel console (ttyS0) to a file.
    -chardev stdio,id=con0,signal=off
    -device virtio-serial-pci,id=vser0 -device virtconsole,bus=vser0.0,chardev=con0
    -chardev "file,id=con1,path=$(qemu_path "$priv/console.log")" -serial chardev:con1
    # 9p shares; multidevs=remap: unique inode numbers where a share spans file systems.
    -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap
    -virtfs "local,path=$(qemu_path "$scratch"),mount_tag=scratch,$scratch_opts"
    -pidfile "$priv/qemu.pid"
)
if [[ -n $forward ]]; then
    netdev="user,id=n0,restrict=on"
    for port in $forward; do netdev+=",hostfwd=tcp:127.0.0.1:$port-:$port"; done
    # romfile=: no iPXE option ROM (the package that has it is not needed).
    qemu+=(-netdev "$netdev" -device "virtio-net-pci,netdev=n0,romfile=")
fi

qemu_pid="" timer_pid="" feeder_pid="" saved_tty=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local pid
    for pid in "$qemu_pid" "$timer_pid" "$feeder_pid"; do
        if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; fi
    done
    if [[ -n $qemu_pid ]] && kill -0 "$qemu_pid" 2>/dev/null; then
        sleep 1
        kill -KILL "$qemu_pid" 2>/dev/null || true
    fi
    [[ -z $saved_tty ]] || stty "$saved_tty" 2>/dev/null || true
    if [[ $debug == 1 ]]; then
        log "control files kept: $ctl $priv"
    else
        rm -rf "$ctl" "$priv"
        # A scratch folder of our own that CMD left empty is removed too.
        if ((own_scratch)); then rmdir "$scratch" 2>/dev/null || true; fi
    fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

start=$SECONDS
if ((interactive)); then
    saved_tty="$(stty -g)"
    "${qemu[@]}" <&0 2>"$priv/qemu.log" &
    qemu_pid=$!
else
    # Standard input reaches QEMU through a FIFO once CMD is about to start, so that nothing is
    # echoed while the test host boots, as chunks: a line with the size, then the bytes; a
    # size 0 ends it (see the test host's /init). dd reads what is there, at most 64 KiB.
    mkfifo "$priv/stdin"
    exec 3<>"$priv/stdin"
    "${qemu[@]}" <&3 2>"$priv/qemu.log" &
    qemu_pid=$!
    (
        while [[ ! -e $ctl/ready ]]; do
            kill -0 "$qemu_pid" 2>/dev/null || exit 0
            sleep 0.1
        done
        while dd bs=65536 count=1 of="$priv/chunk" status=none; do
            size="$(stat -c %s "$priv/chunk")"
            ((size > 0)) || break
            echo "$size"
            cat "$priv/chunk"
        done >&3
        echo 0 >&3
    ) <&0 2>/dev/null &
    feeder_pid=$!
fi
sleep "$timeout_s" &
timer_pid=$!

# Wait for QEMU to end or the deadline, whichever comes first.
finished=""
wait -n -p finished "$qemu_pid" "$timer_pid" || true
timed_out=0
if [[ $finished == "$qemu_pid" ]]; then
    qemu_pid=""
else
    timed_out=1
    timer_pid=""
    kill "$qemu_pid" 2>/dev/null || true
    sleep 5 &
    timer_pid=$!
    wait -n -p finished "$qemu_pid" "$timer_pid" || true
    [[ $finished != "$qemu_pid" ]] || qemu_pid=""
fi
elapsed=$((SECONDS - start))

if [[ -f $ctl/error ]]; then
    log "the test host could not run CMD: $(<"$ctl/error")"
    exit 125
fi
if [[ -f $ctl/status ]]; then
    status="$(<"$ctl/status")"
    [[ $debug != 1 ]] || log "CMD finished with status $status after ${elapsed}s"
    exit "$status"
fi
if ((timed_out)); then
    log "timed out after $timeout_s s"
    exit 124
fi
last="$(sed -n 's/^test-host-stage: //p' "$priv/console.log" | tail -n1 | tr -d '\r')"
log "the test host stopped before CMD finished, after ${elapsed}s;" \
    "its last stage: ${last:-none (its init did not start)}"
# QEMU's messages, less the warnings about CPU features that TCG lacks (-cpu EPYC asks them).
qemu_said="$(grep -v "TCG doesn't support requested feature" "$priv/qemu.log" | tail -n 20)" \
    || true
if [[ -n $qemu_said ]]; then
    log "QEMU said:"
    printf '%s\n' "$qemu_said" >&2
fi
if [[ -s $priv/console.log ]]; then
    log "the test host's kernel log ends with:"
    grep -a -m1 'Kernel panic' "$priv/console.log" >&2 || true
    grep -a -v '^test-host-stage: ' "$priv/console.log" | tail -n 12 >&2 || true
fi
exit 125
