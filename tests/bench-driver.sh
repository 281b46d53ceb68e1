#!/usr/bin/env bash
# Benchmarks the guest's qxl driver, Debian's stock one against the one patched by
# guest-drivers/, on the same display workloads in one run: the guest's drawing rate,
# interrupts per second and the vCPU-side QXL time per port write (tests/src/bin/
# bench-driver.rs says what exactly is measured and how).
#
# Usage: tests/bench-driver.sh [RUNS]   (boots of each driver, alternating; default 3)
#
# Builds the release vmm, the benchmark and both guest images (the patched one needs root the
# first time), then runs the benchmark directly when this machine's /dev/kvm can boot Linux, or
# else inside the nested-KVM test host. It prints figures; it exits non-zero only when a boot
# or a phase failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=resources/common.sh
. resources/common.sh

runs="${1:-3}"
if [[ $# -gt 1 || ! $runs =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: tests/bench-driver.sh [RUNS]" >&2
    exit 2
fi

ensure_rust
step "vmm (release)" cargo build --release --locked -p vmm
step "benchmark" cargo build --locked -p vmm-tests --bins
step "guest images" resources/build-guest.sh --patched-qxl
export VMM_BIN="$PWD/target/release/vmm"
if kvm_boots_linux; then
    step "benchmark, directly on /dev/kvm" target/debug/bench-driver "$runs"
else
    # Each boot: at most 300 s to the shell, then two phases of about 15 s each.
    export TEST_HOST_TIMEOUT="${TEST_HOST_TIMEOUT:-$((runs * 2 * 400 + 300))}"
    step "benchmark, in the nested-KVM test host (/dev/kvm here cannot boot Linux)" \
        resources/test-host.sh target/debug/bench-driver "$runs" </dev/null
fi
