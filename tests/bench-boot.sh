#!/usr/bin/env bash
# Benchmarks the vmm against QEMU with KVM on the test guest: boot time to VMM-GUEST-READY and
# resident memory (tests/src/bin/bench-boot.rs says what exactly is measured and how).
#
# Usage: tests/bench-boot.sh [RUNS]   (runs of each VMM, alternating; default 5)
#
# Builds the release vmm, the benchmark and the guest image, then runs the benchmark directly
# when this machine's /dev/kvm can boot Linux, or else inside the nested-KVM test host
# (resources/test-host.sh, with its default 3 GiB: the guests run one at a time). Exits with the
# benchmark's status: 1 when a run failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=resources/common.sh
. resources/common.sh

runs="${1:-5}"
if [[ $# -gt 1 || ! $runs =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: tests/bench-boot.sh [RUNS]" >&2
    exit 2
fi

ensure_rust
step "vmm (release)" cargo build --release --locked -p vmm
step "benchmark" cargo build --locked -p vmm-tests --bins
step "guest image" resources/build-guest.sh
export VMM_BIN="$PWD/target/release/vmm"
if kvm_boots_linux; then
    command -v qemu-system-x86_64 >/dev/null \
        || { echo "qemu-system-x86_64 is missing (Debian: qemu-system-x86)" >&2; exit 1; }
    step "benchmark, directly on /dev/kvm" target/debug/bench-boot "$runs"
else
    # Each run: a boot killed by 180 s, then two timing phases of at most 120 s each; two runs
    # a round, plus the test host's own start.
    export TEST_HOST_TIMEOUT="${TEST_HOST_TIMEOUT:-$((runs * 2 * 420 + 300))}"
    step "benchmark, in the nested-KVM test host (/dev/kvm here cannot boot Linux)" \
        resources/test-host.sh target/debug/bench-boot "$runs" </dev/null
fi
