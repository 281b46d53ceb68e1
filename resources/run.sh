#!/usr/bin/env bash
# Builds the vmm and the Debian test guest, then boots the guest with its shell on this
# terminal. Where /dev/kvm cannot boot Linux (no VMX/SVM, or the PVM backend), the vmm runs
# inside the nested-KVM test host instead, and this says so. Extra arguments go to the vmm.
#
# In the guest's shell, `poweroff -f` ends the VM; Ctrl-A X quits the vmm at any time.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
. resources/common.sh

ensure_rust
step "build" cargo build --release --locked -p vmm
step "guest image" resources/build-guest.sh

args=(--kernel target/guest/bzImage --initramfs target/guest/initramfs.cpio.gz
    --memory 512M --cpus 2 "$@")
if kvm_boots_linux; then
    exec target/release/vmm "${args[@]}"
fi

echo "note: this machine's /dev/kvm cannot boot Linux (no VMX/SVM, or the PVM backend);" >&2
echo "      running the vmm inside the nested-KVM test host (resources/test-host.sh)." >&2
exec resources/test-host.sh target/release/vmm "${args[@]}"
