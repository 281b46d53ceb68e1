#!/usr/bin/env bash
# Builds the vmm and the Debian test guest, then boots the guest with its shell on this
# terminal and its screen on SPICE at 127.0.0.1:5900 (SPICE_PORT to change it), protected by a
# password kept in target/spice-password (made on first use; printed below). Where /dev/kvm
# cannot boot Linux (no VMX/SVM, or the PVM backend), the vmm runs inside the nested-KVM test
# host instead, with the SPICE port forwarded to this machine's 127.0.0.1, and this says so.
# Extra arguments go to the vmm; a first argument --patched-qxl boots the guest with the
# patched qxl driver from guest-drivers/ instead of Debian's (see the README).
#
# In the guest's shell, `poweroff -f` ends the VM; Ctrl-A X quits the vmm at any time.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=resources/common.sh
. resources/common.sh

initramfs=target/guest/initramfs.cpio.gz guest_flags=()
if [[ ${1:-} == --patched-qxl ]]; then
    shift
    initramfs=target/guest/initramfs-patched-qxl.cpio.gz guest_flags=(--patched-qxl)
fi

ensure_rust
step "build" cargo build --release --locked -p vmm
step "guest image" resources/build-guest.sh "${guest_flags[@]}"

port="${SPICE_PORT:-5900}"
password_file="$PWD/target/spice-password"
if [[ ! -s $password_file ]]; then
    (umask 077 && head -c 12 /dev/urandom | base64 | tr -d '/+=' >"$password_file")
fi
password="$(head -n 1 "$password_file")"

args=(--kernel target/guest/bzImage --initramfs "$initramfs"
    --memory 512M --cpus 2)
echo "SPICE: remote-viewer spice://127.0.0.1:$port  (password: $password," \
    "kept in $password_file)" >&2
if kvm_boots_linux; then
    exec target/release/vmm "${args[@]}" \
        --spice "port=$port,password-file=$password_file" "$@"
fi

echo "note: this machine's /dev/kvm cannot boot Linux (no VMX/SVM, or the PVM backend);" >&2
echo "      running the vmm inside the nested-KVM test host (resources/test-host.sh)." >&2
# Inside, the vmm listens on the test host's own address, which only the forward reaches.
export TEST_HOST_FORWARD="$port${TEST_HOST_FORWARD:+ $TEST_HOST_FORWARD}"
exec resources/test-host.sh target/release/vmm "${args[@]}" \
    --spice "port=$port,addr=10.0.2.15,password-file=$password_file" "$@"
