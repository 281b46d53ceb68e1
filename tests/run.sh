#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit tests and the integration tests that boot
# the Debian guest (directly on /dev/kvm where it has VMX/SVM, in the nested-KVM test host
# otherwise). Installs what it needs on Debian 12 when run as root. Used by CI (.ci/run).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=resources/common.sh
. resources/common.sh

ensure_rust
step "formatting" cargo fmt --all -- --check
step "lints" cargo clippy --workspace --all-targets --locked -- -D warnings
step "build" cargo build --workspace --locked
step "guest image" resources/build-guest.sh --patched-qxl
# QEMU serves as the reference SPICE server and the test host, remote-viewer as the real SPICE
# client; only root can install them.
if [[ $(id -u) == 0 ]]; then
    step "QEMU" ensure_qemu
    step "viewer tools" ensure_viewer_tools
fi
if kvm_boots_linux; then
    echo "boot tests run directly on this machine's /dev/kvm" >&2
else
    echo "boot tests run in the nested-KVM test host: /dev/kvm here cannot boot Linux" >&2
fi
# Boot tests share the machine's two cores; one guest at a time keeps each within its deadline.
step "tests" cargo test --workspace --locked -- --test-threads=1
