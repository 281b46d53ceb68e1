#!/usr/bin/env bash
# C30's soak, run by hand: the project's own guest reboots itself REBOOTS times (default 300)
# with a SPICE client connected, directly on /dev/kvm; the test fails if the client is dropped
# or the vmm's threads, descriptors or memory grow (tests/tests/reboot.rs says how).
#
# Usage: tests/soak-reboot.sh [REBOOTS]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=resources/common.sh
. resources/common.sh

reboots="${1:-300}"
[[ $reboots =~ ^[1-9][0-9]*$ ]] || { echo "usage: tests/soak-reboot.sh [REBOOTS]" >&2; exit 2; }
ensure_rust
step "build" cargo build --locked -p vmm
REBOOTS="$reboots" step "soak: $reboots reboots" \
    cargo test --locked -p vmm-tests --test reboot c30 -- --nocapture
