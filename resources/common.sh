# shellcheck shell=bash
# Shared by the repository's entry scripts (resources/run.sh, tests/run.sh): source it.

# Prints a heading and runs the command.
step() {
    local what="$1"
    shift
    printf '\n==> %s: %s\n' "$what" "$*" >&2
    "$@"
}

# Installs the Debian packages that building needs when they are missing: a C compiler and
# the C library's development files (the Rust linker driver and the guest test tools use them).
ensure_build_tools() {
    local missing=()
    command -v gcc >/dev/null || missing+=(gcc)
    [[ -f /usr/lib/x86_64-linux-gnu/libc.a ]] || missing+=(libc6-dev)
    ((${#missing[@]} == 0)) && return 0

    echo "installing ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

# Makes sure cargo is on PATH, installing Rust with rustup when it is missing.
ensure_rust() {
    ensure_build_tools
    if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null && return 0

    echo "cargo not found: installing the Rust toolchain with rustup" >&2
    if ! command -v curl >/dev/null; then
        apt-get update -qq && apt-get install -y -qq curl ca-certificates
    fi
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal \
        --component rustfmt,clippy
    export PATH="$HOME/.cargo/bin:$PATH"
}

# Returns success when /dev/kvm can boot Linux here: hardware VMX or SVM, not an emulating
# backend such as PVM.
kvm_boots_linux() {
    [[ -c /dev/kvm ]] && grep -qwE 'vmx|svm' /proc/cpuinfo && [[ ! -d /sys/module/kvm_pvm ]]
}
