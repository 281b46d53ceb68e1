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

# Installs QEMU 10 from bookworm-backports with its SPICE module when either is missing: the
# nested-KVM test host runs on it, and tests use it as a reference (QEMU's own SPICE server for
# the SPICE client, QEMU with KVM for the benchmarks). Needs root; says why and fails otherwise.
ensure_qemu() {
    if command -v qemu-system-x86_64 >/dev/null \
        && dpkg-query -W -f='${Status}' qemu-system-modules-spice 2>/dev/null \
        | grep -q 'install ok installed'; then
        return 0
    fi
    if [[ $(id -u) != 0 ]]; then
        echo "QEMU (qemu-system-x86, qemu-system-modules-spice) is missing; run as root" \
            "to install it from bookworm-backports" >&2
        return 1
    fi
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
            echo "no Debian bookworm entry in the apt sources to derive bookworm-backports" \
                "from" >&2
            return 1
        fi
        echo "added bookworm-backports to the apt sources" >&2
    fi
    echo "installing qemu-system-x86 and qemu-system-modules-spice from bookworm-backports" >&2
    local log
    log="$(mktemp)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends -t bookworm-backports qemu-system-x86 \
        qemu-system-modules-spice; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "cannot install QEMU from bookworm-backports" >&2
        return 1
    fi
    rm -f "$log"
}

# Installs what the tests that play the user need when it is missing: remote-viewer (spice-gtk),
# a virtual X server, xdotool for typing into the viewer and ImageMagick for screenshots.
ensure_viewer_tools() {
    local missing=()
    command -v remote-viewer >/dev/null || missing+=(virt-viewer)
    command -v Xvfb >/dev/null || missing+=(xvfb)
    command -v xdotool >/dev/null || missing+=(xdotool)
    command -v import >/dev/null || missing+=(imagemagick)
    ((${#missing[@]} == 0)) && return 0

    echo "installing ${missing[*]}" >&2
    # With recommends: remote-viewer's GTK stack is tested with them.
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}
