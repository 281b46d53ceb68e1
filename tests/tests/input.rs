// SPDX-License-Identifier: Apache-2.0
//! The PS/2 keyboard and mouse under Linux's i8042, atkbd and psmouse drivers, fed through the
//! control socket's `input-send-event`.
//!
//! One boot serves every check. The guest announces each step on the serial console and waits
//! for a line on its console input; a script next to the vmm (in the same place, since the
//! control socket is local) sends the input and then lets the guest go on:
//!
//! 1. text typed into the shell on tty1 runs there (`echo typed-ok > /dev/ttyS0`);
//! 2. extended keys (case C20) reach the AT keyboard's event device as the right Linux key
//!    codes, one press and one release each;
//! 3. mouse motion and a left click reach the PS/2 mouse's event device.

// An integration test file is itself the test module.
#![allow(clippy::tests_outside_test_module)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use vmm_tests::*;

const TIMEOUT: Duration = Duration::from_secs(400);

/// Runs in the guest. Event records are 24-byte `struct input_event`s: a 16-byte timestamp,
/// then u16 type, u16 code and i32 value; od prints them as twelve u16 words. Autorepeat
/// events (value 2), which a slow nested guest may see, are left out.
const GUEST_SCRIPT: &str = r#"#!/bin/sh
event_of() {
    for d in /sys/class/input/event*; do
        case "$(cat $d/device/name)" in *"$1"*) basename $d; return ;; esac
    done
}
decode() {
    od -An -v -tu2 -w24 "$1" | while read s1 s2 s3 s4 s5 s6 s7 s8 type code low high; do
        case $type in
        1) [ "$low" != 2 ] && echo "KEY $code $low" ;;
        2) echo "REL $code $low $high" ;;
        esac
    done
}
record() {
    cat /dev/input/$1 > $2 &
    reader=$!
    sleep 1
    echo "READY-$3"
    read ack
    sleep 2
    kill $reader
}
# serio probes its devices in the background: give the mouse driver time to finish.
n=0
while [ $n -lt 100 ]; do
    kbd=$(event_of 'AT Translated Set 2 keyboard')
    mouse=$(event_of 'PS/2')
    [ -n "$kbd" ] && [ -n "$mouse" ] && break
    n=$((n + 1))
    sleep 0.2
done
for d in /sys/class/input/event*; do echo "INPUT-DEVICE $(cat $d/device/name)"; done
dmesg | grep -E 'i8042|serio|psmouse|input:'
[ -n "$kbd" ] && [ -n "$mouse" ] || { echo 'no PS/2 event devices'; exit 1; }
echo READY-TYPE
read ack
record $kbd /tmp/kbd.bin KEYS
record $mouse /tmp/mouse.bin MOUSE
decode /tmp/kbd.bin | sed 's/^/KBD-EVENT /'
decode /tmp/mouse.bin | sed 's/^/MOUSE-EVENT /'
"#;

/// One `input-send-event` request.
fn request(events: &[String]) -> String {
    format!(
        r#"{{"execute":"input-send-event","arguments":{{"events":[{}]}}}}"#,
        events.join(",")
    )
}

fn key_event(key: &str, down: bool) -> String {
    format!(r#"{{"type":"key","data":{{"down":{down},"key":{key}}}}}"#)
}

fn qcode(name: &str) -> String {
    format!(r#"{{"type":"qcode","data":"{name}"}}"#)
}

/// A press and release of `key`, with Shift held around it when `shift` is set.
fn tap(key: &str, shift: bool) -> String {
    let mut events = vec![key_event(key, true), key_event(key, false)];
    if shift {
        events.insert(0, key_event(&qcode("shift"), true));
        events.push(key_event(&qcode("shift"), false));
    }
    request(&events)
}

/// The requests that type `text` on a US keyboard (letters, digits and the few symbols used).
fn type_text(text: &str) -> Vec<String> {
    text.chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => tap(&qcode(&c.to_string()), false),
            'A'..='Z' => tap(&qcode(&c.to_ascii_lowercase().to_string()), true),
            ' ' => tap(&qcode("spc"), false),
            '-' => tap(&qcode("minus"), false),
            '/' => tap(&qcode("slash"), false),
            '>' => tap(&qcode("dot"), true),
            '\n' => tap(&qcode("ret"), false),
            other => panic!("no key for {other:?}"),
        })
        .collect()
}

/// The C20 keys, each pressed and released, with the Linux key code the guest must report.
/// Up goes as QEMU's key number 0xc8 (0x80 | 0x48) to cover that form too.
fn extended_keys() -> Vec<(String, u16)> {
    let number_up = r#"{"type":"number","data":200}"#.to_string();
    let named = [
        ("left", 105),
        ("ctrl_r", 97),
        ("alt_r", 100),
        ("kp_8", 72),
        ("kp_enter", 96),
        ("kp_divide", 98),
        ("insert", 110),
        ("delete", 111),
        ("home", 102),
        ("end", 107),
        ("pause", 119),
    ];
    let mut keys = vec![(number_up, 103)];
    keys.extend(named.iter().map(|(name, code)| (qcode(name), *code)));
    keys
}

fn mouse_requests() -> Vec<String> {
    let rel = |axis: &str, value: i32| {
        format!(r#"{{"type":"rel","data":{{"axis":"{axis}","value":{value}}}}}"#)
    };
    let button =
        |down: bool| format!(r#"{{"type":"btn","data":{{"down":{down},"button":"left"}}}}"#);
    vec![
        request(&[rel("x", 10), rel("y", 5)]),
        request(&[button(true)]),
        request(&[button(false)]),
    ]
}

/// The host side, next to the vmm: wait for each marker, send the step's input, say go.
fn host_script(dir: &Path, vmm_args: &str) -> String {
    let qmp = repo_root().join("target/debug/qmp");
    let quote = |requests: &[String]| {
        requests
            .iter()
            .map(|r| format!("'{r}'"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    // One key at a time: a burst of 72 events (scan code, key, sync per press and release)
    // would overflow evdev's 64-event client buffer before the slow nested guest's reader runs.
    let keys: String = extended_keys()
        .iter()
        .map(|(k, _)| {
            format!(
                "{qmp} {dir}/api.sock '{}' > /dev/null; sleep 0.3\n",
                tap(k, false),
                qmp = qmp.display(),
                dir = dir.display()
            )
        })
        .collect();
    format!(
        "set -e\ncd {dir}\nrm -f in serial.log api.sock\nmkfifo in\n\
         {vmm} {vmm_args} --api-socket {dir}/api.sock < in > serial.log 2>&1 &\n\
         vmm=$!\nexec 3> in\n\
         wait_for() {{ n=0; until grep -q \"$1\" serial.log; do n=$((n+1)); \
         [ $n -lt 1500 ] || {{ echo \"no marker $1\"; cat serial.log; exit 1; }}; \
         kill -0 $vmm || {{ wait $vmm; echo \"vmm died: $?\"; cat serial.log; exit 1; }}; \
         sleep 0.2; done; }}\n\
         wait_for READY-TYPE\n{qmp} {dir}/api.sock {typed} > /dev/null\n\
         wait_for '^typed-ok'\necho go >&3\n\
         wait_for READY-KEYS\n{keys}echo go >&3\n\
         wait_for READY-MOUSE\n{qmp} {dir}/api.sock {mouse} > /dev/null\necho go >&3\n\
         exec 3>&-\nwait $vmm\necho vmm-exit=$?\ncat serial.log\n",
        dir = dir.display(),
        vmm = vmm_binary().display(),
        qmp = qmp.display(),
        typed = quote(&type_text("echo typed-ok > /dev/ttyS0\n")),
        mouse = quote(&mouse_requests()),
    )
}

/// Builds the guest initramfs plus an extra cpio archive holding the guest script.
fn initramfs_with_script(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("input")).unwrap();
    std::fs::write(tree.join("input/check.sh"), GUEST_SCRIPT).unwrap();

    initramfs_with(dir, &guest_file("initramfs.cpio.gz"), &tree, "input").unwrap()
}

/// The values after `prefix` on each line that starts with it, as numbers.
fn events(output: &str, prefix: &str) -> Vec<Vec<u32>> {
    output
        .replace('\r', "")
        .lines()
        .filter_map(|l| l.trim().strip_prefix(prefix))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        })
        .collect()
}

#[test]
fn keys_and_mouse_reach_the_guest_through_input_send_event() {
    let Some(place) = require_boot_place("input") else {
        return;
    };
    let dir = repo_root().join(format!("target/tests/input-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let initramfs = initramfs_with_script(&dir);
    let mut args = guest_args(1, &run_cmdline("sh /input/check.sh"));
    args[3] = initramfs.display().to_string();
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = host_script(&dir, &quoted.join(" "));

    let (status, output) = run_host_script(place, &script, &dir, TIMEOUT).unwrap();
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(output.contains("vmm-exit=0"), "{output}");
    assert!(output.contains("VMM-RUN-EXIT=0"), "{output}");

    // 1: the tty1 shell ran the typed command (the host waited for its output line).
    assert!(
        output.replace('\r', "").lines().any(|l| l == "typed-ok"),
        "{output}"
    );

    // 2: each extended key pressed and released once, as its Linux key code.
    let want: Vec<Vec<u32>> = extended_keys()
        .iter()
        .flat_map(|(_, code)| [vec![u32::from(*code), 1], vec![u32::from(*code), 0]])
        .collect();
    assert_eq!(events(&output, "KBD-EVENT KEY"), want, "{output}");

    // 3: REL_X 10 and REL_Y 5 (down), then BTN_LEFT (0x110) pressed and released.
    assert!(
        output.contains("INPUT-DEVICE ImPS/2 Generic Wheel Mouse"),
        "{output}"
    );
    assert_eq!(
        events(&output, "MOUSE-EVENT REL"),
        [vec![0, 10, 0], vec![1, 5, 0]],
        "{output}"
    );
    assert_eq!(
        events(&output, "MOUSE-EVENT KEY"),
        [vec![0x110, 1], vec![0x110, 0]],
        "{output}"
    );
}
