// SPDX-License-Identifier: Apache-2.0
//! Bad input to the vmm: each gets a one-line error naming the problem and a non-zero exit,
//! before any vCPU starts. These run on this machine directly; no guest boots.

// An integration test file is itself the test module.
#![allow(clippy::tests_outside_test_module)]

use std::path::Path;
use std::process::Command;

use vmm_tests::*;

/// Runs the vmm with `args` and returns (exit code, stderr), checking the one-line form.
fn fail_with(args: &[&str]) -> (i32, String) {
    fail_with_command(Command::new(vmm_binary()), args)
}

fn fail_with_command(mut cmd: Command, args: &[&str]) -> (i32, String) {
    let out = cmd
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run vmm");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().expect("exited, not killed");

    assert_ne!(code, 0, "{args:?} should fail:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one line:\n{stderr}");
    assert!(lines[0].starts_with("vmm: error: "), "{stderr}");
    assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    (code, stderr)
}

fn scratch(name: &str, bytes: &[u8]) -> String {
    let dir = repo_root().join("target/tests/cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

fn kernel() -> String {
    guest_file("bzImage").display().to_string()
}

fn kvm_usable() -> bool {
    let usable = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !usable {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI needs a usable /dev/kvm"
        );
        eprintln!("skipped: /dev/kvm is not usable here");
    }
    usable
}

#[test]
fn missing_kernel_option() {
    let (code, err) = fail_with(&[]);
    assert_eq!(code, 2);
    assert!(err.contains("--kernel <PATH>"), "{err}");
}

#[test]
fn unknown_option() {
    let (code, err) = fail_with(&["--kernel", "k", "--frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("--frobnicate"), "{err}");
}

#[test]
fn missing_or_unreadable_kernel() {
    let (_, err) = fail_with(&["--kernel", "/nonexistent/bzImage"]);
    assert!(
        err.contains("cannot read kernel /nonexistent/bzImage: No such file"),
        "{err}"
    );

    let dir = repo_root().join("target").display().to_string();
    let (_, err) = fail_with(&["--kernel", &dir]);
    assert!(
        err.contains("cannot read kernel") && err.contains("directory"),
        "{err}"
    );
}

#[test]
fn empty_file_is_not_a_kernel() {
    let (code, err) = fail_with(&["--kernel", &scratch("empty", b"")]);
    assert_eq!(code, 1);
    assert!(err.contains("is an empty file"), "{err}");
}

#[test]
fn truncated_bzimage_is_refused_with_sizes() {
    let head = std::fs::read(kernel()).unwrap()[..4096].to_vec();
    let (_, err) = fail_with(&["--kernel", &scratch("bzImage-4k", &head)]);
    assert!(
        err.contains("truncated bzImage") && err.contains("the file has 4096"),
        "{err}"
    );
}

#[test]
fn other_files_are_not_kernels() {
    let initramfs = guest_file("initramfs.cpio.gz").display().to_string();
    let (_, err) = fail_with(&["--kernel", &initramfs]);
    assert!(
        err.contains("is not a Linux kernel: neither an ELF vmlinux"),
        "{err}"
    );
}

#[test]
fn missing_initramfs() {
    let (_, err) = fail_with(&["--kernel", &kernel(), "--initramfs", "/nonexistent/initrd"]);
    assert!(
        err.contains("cannot read initramfs /nonexistent/initrd"),
        "{err}"
    );
}

#[test]
fn initramfs_that_does_not_fit() {
    if !kvm_usable() {
        return;
    }
    let path = repo_root().join("target/tests/cli/huge-initrd");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(100 << 20).unwrap();

    let args = [
        "--kernel",
        &kernel(),
        "--initramfs",
        path.to_str().unwrap(),
        "--memory",
        "64M",
    ];
    let (_, err) = fail_with(&args);
    assert!(
        err.contains("does not fit") && err.contains("give the guest more --memory"),
        "{err}"
    );
}

#[test]
fn memory_sizes() {
    let k = kernel();
    let (code, err) = fail_with(&["--kernel", &k, "--memory", "32M"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("too small: Linux needs at least 64 MiB"),
        "{err}"
    );

    let (_, err) = fail_with(&["--kernel", &k, "--memory", "size=12X"]);
    assert!(err.contains("invalid size '12X'"), "{err}");

    if kvm_usable() {
        let (_, err) = fail_with(&["--kernel", &k, "--memory", "100T"]);
        assert!(
            err.contains("is more than this host's") && err.contains("MiB of RAM"),
            "{err}"
        );
    }
}

#[test]
fn vcpu_counts() {
    let k = kernel();
    for bad in ["0", "boot=0", "255", "boot=100000"] {
        let (code, err) = fail_with(&["--kernel", &k, "--cpus", bad]);
        assert_eq!(code, 2);
        assert!(err.contains("out of range: use 1 to 254"), "{bad}: {err}");
    }
    let (_, err) = fail_with(&["--kernel", &k, "--cpus", "lots"]);
    assert!(err.contains("invalid vCPU count 'lots'"), "{err}");
}

#[test]
fn command_lines_over_the_limit_are_refused() {
    for len in [2048, 3000] {
        let cmdline = format!("console=ttyS0 {}", "y".repeat(len - 14));
        let (code, err) = fail_with(&["--kernel", &kernel(), "--cmdline", &cmdline]);
        assert_eq!(code, 2);
        assert!(err.contains(&format!("--cmdline is {len} bytes")), "{err}");
        assert!(err.contains("at most 2047"), "{err}");
    }
}

#[test]
fn no_kvm_device() {
    if !Path::new("/usr/bin/unshare").exists() || unsafe_is_not_root() {
        eprintln!("skipped: needs root and unshare to hide /dev/kvm");
        return;
    }
    // A private mount namespace with an empty /dev.
    let vmm = vmm_binary().display().to_string();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "sh",
        "-c",
        "mount -t tmpfs none /dev && exec \"$0\" \"$@\"",
        &vmm,
    ]);
    let (_, err) = fail_with_command(cmd, &["--kernel", &kernel()]);
    assert!(
        err.contains("cannot open /dev/kvm: no such device"),
        "{err}"
    );
}

#[test]
fn no_permission_on_kvm_device() {
    if !Path::new("/usr/bin/setpriv").exists() || unsafe_is_not_root() {
        eprintln!("skipped: needs root and setpriv to drop privileges");
        return;
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(vmm_binary());
    let (_, err) = fail_with_command(cmd, &["--kernel", &kernel()]);
    assert!(
        err.contains("cannot open /dev/kvm: permission denied"),
        "{err}"
    );
}

fn unsafe_is_not_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() != 0 }
}
