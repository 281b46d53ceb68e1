// SPDX-License-Identifier: Apache-2.0
//! Boots the Debian test guest and checks what it prints on the serial console.

// An integration test file is itself the test module.
#![allow(clippy::tests_outside_test_module)]

use std::time::Duration;

use vmm_tests::*;

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn boot_and_run(
    test: &str,
    kernel: Option<&str>,
    cpus: u8,
    script: &str,
) -> Option<(i32, Vec<String>, String)> {
    let place = require_boot_place(test)?;
    let mut args = guest_args(cpus, &run_cmdline(script));
    if let Some(kernel) = kernel {
        args[1] = guest_file(kernel).display().to_string();
    }
    let (status, output) = run_vmm(place, &args, BOOT_TIMEOUT).expect("vmm run");
    assert!(
        output.contains("VMM-GUEST-READY"),
        "{test}: no ready marker:\n{output}"
    );
    assert!(
        output.contains("VMM-RUN-EXIT=0"),
        "{test}: guest command failed:\n{output}"
    );
    Some((status.code().unwrap_or(-1), run_output(&output), output))
}

/// Boots the bzImage, as users do; the other tests boot the ELF vmlinux (C26 (a) and (b)).
#[test]
fn one_vcpu_boots_and_poweroff_exits_zero() {
    let script = "nproc; cat /sys/devices/system/cpu/online";
    let Some((code, lines, output)) = boot_and_run("one_vcpu", Some("bzImage"), 1, script) else {
        return;
    };
    assert_eq!(lines, vec!["1", "0"], "{output}");
    assert_eq!(
        code, 0,
        "poweroff must end the VMM with status 0:\n{output}"
    );
}

#[test]
fn two_vcpus_are_counted_by_the_guest() {
    let script = "nproc; cat /sys/devices/system/cpu/online; grep -c ^processor /proc/cpuinfo";
    let Some((code, lines, output)) = boot_and_run("two_vcpus", None, 2, script) else {
        return;
    };
    assert_eq!(lines, vec!["2", "0-1", "2"], "{output}");
    assert_eq!(code, 0, "{output}");
}

#[test]
fn serial_console_runs_typed_commands_and_reboot_boots_again() {
    let Some(place) = require_boot_place("serial_console") else {
        return;
    };
    let args = guest_args(1, TEST_CMDLINE);
    let (mut session, ready) = boot_session(place, &args, BOOT_TIMEOUT);
    // The shell prints its prompt once it reads the console.
    let prompt = session
        .expect_after(ready, "# ", Duration::from_secs(120))
        .unwrap();
    session.send("echo sum=$((6 * 7))\n").unwrap();
    session
        .expect_after(prompt, "sum=42", Duration::from_secs(60))
        .unwrap();

    // The vmm boots the guest again in a fresh VM; then poweroff ends it.
    session.send("reboot -f\n").unwrap();
    let again = session
        .expect_after(prompt, "VMM-GUEST-READY", Duration::from_secs(240))
        .unwrap();
    let prompt = session
        .expect_after(again, "# ", Duration::from_secs(120))
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    session.send("poweroff -f\n").unwrap();
    let (status, output) = session.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "poweroff after the reboot:\n{output}"
    );
    assert!(output[prompt..].contains("poweroff"), "{output}");
}

/// C26 (c): the format is told by the contents, not the name. (Every other test here but
/// the first boots the ELF vmlinux.)
#[test]
fn bzimage_named_vmlinux_boots() {
    let Some(place) = require_boot_place("kernel_formats") else {
        return;
    };
    let dir = repo_root().join("target/tests");
    std::fs::create_dir_all(&dir).unwrap();
    let renamed = dir.join("vmlinux");
    std::fs::copy(guest_file("bzImage"), &renamed).unwrap();

    let mut args = guest_args(1, &run_cmdline("echo format-renamed"));
    args[1] = renamed.display().to_string();
    let (status, output) = run_vmm(place, &args, BOOT_TIMEOUT).unwrap();
    assert_eq!(run_output(&output), vec!["format-renamed"], "{output}");
    assert_eq!(status.code(), Some(0), "{output}");
}

#[test]
fn longest_cmdline_and_double_dashes_reach_the_guest_verbatim() {
    let Some(place) = require_boot_place("cmdline_limit") else {
        return;
    };
    let head = format!("{} vmm.run=\"cat /proc/cmdline\" pad=", TEST_CMDLINE);
    let tail = " -- init-arg -- another END-OF-CMDLINE";
    let cmdline = format!("{head}{}{tail}", "x".repeat(2047 - head.len() - tail.len()));
    assert_eq!(cmdline.len(), 2047);

    let mut args = guest_args(1, &cmdline);
    args[9] = cmdline.clone();
    let (status, output) = run_vmm(place, &args, BOOT_TIMEOUT).unwrap();
    let lines = run_output(&output);
    assert_eq!(lines.len(), 1, "{output}");
    assert_eq!(
        lines[0], cmdline,
        "/proc/cmdline differs from what was given"
    );
    assert_eq!(status.code(), Some(0), "{output}");
}

#[test]
fn a_hung_up_terminal_is_logged_once_and_never_blocks_the_guest() {
    let Some(place) = require_boot_place("serial_hangup") else {
        return;
    };
    // The guest floods its console for 40 s of its own time, then powers off.
    let flood = "end=$(($(date +%s) + 40)); while [ $(date +%s) -lt $end ]; do \
                 cat /proc/cpuinfo; echo FLOOD-LINE; done";
    let mut args = vec!["FLOOD-LINE".to_string(), "10".into(), "--".into()];
    args.push(vmm_binary().display().to_string());
    args.extend(guest_args(1, &run_cmdline(flood)));

    let helper = repo_root().join("target/debug/pty-hangup");
    assert!(
        helper.exists(),
        "build the tests crate's binaries first (cargo build --workspace)"
    );
    let (status, output) = retry_early_end(place, || {
        run_to_end(
            command_in(place, &helper, &args, BOOT_TIMEOUT),
            BOOT_TIMEOUT,
        )
    })
    .expect("pty-hangup run");
    assert_eq!(status.code(), Some(0), "{output}");

    let report = output
        .lines()
        .find(|l| l.starts_with("pty-hangup:"))
        .expect(&output);
    let field = |name: &str| -> u64 {
        let item = report
            .split_whitespace()
            .find(|w| w.starts_with(name))
            .expect(report);
        item[name.len() + 1..].parse().expect(report)
    };
    assert_eq!(
        field("exit"),
        0,
        "the guest must run on and power off:\n{output}"
    );
    // A busy loop on the closed terminal would use the whole window; allow 20%.
    assert!(
        field("idle_cpu_ms") * 5 < field("window_ms"),
        "VMM threads busy after hang-up:\n{output}"
    );

    let hangup_lines = output
        .lines()
        .filter(|l| l.contains("serial console output failed"));
    assert_eq!(
        hangup_lines.count(),
        1,
        "one log line about the hang-up:\n{output}"
    );
}
