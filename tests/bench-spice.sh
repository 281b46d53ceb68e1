#!/usr/bin/env bash
# Benchmarks the vmm's SPICE display path directly on this machine's /dev/kvm: the project's
# own small guest (tests/guest/qxlbench.c, in its marker mode) draws tiles and the project's
# Rust SPICE client receives them on 127.0.0.1 (tests/src/bin/bench-spice.rs says what
# exactly is measured and how).
#
# Usage: tests/bench-spice.sh [RUNS]   (default 5)
#
# The guest needs no Linux, so this runs on any /dev/kvm, PVM included. It prints figures
# (the project sets no targets for them); it exits non-zero only when a run fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=resources/common.sh
. resources/common.sh

runs="${1:-5}"
if [[ $# -gt 1 || ! $runs =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: tests/bench-spice.sh [RUNS]" >&2
    exit 2
fi

ensure_rust
step "vmm (release)" cargo build --release --locked -p vmm
step "benchmark" cargo build --locked -p vmm-tests --bins
export VMM_BIN="$PWD/target/release/vmm"
target/debug/bench-spice "$runs"
