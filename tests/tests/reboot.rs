// SPDX-License-Identifier: Apache-2.0
//! Guest reboots, with the project's own small guest (tests/guest/qxlbench.c in its reboot
//! mode: it covers its screen with tiles and resets the machine through the i8042, every
//! boot) directly on /dev/kvm. C30: a SPICE client stays connected across reboots while the
//! VMM's threads, descriptors and memory stay flat; `--no-reboot` ends the VMM instead.
#![allow(clippy::tests_outside_test_module)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use vmm_tests::spice_client::{ImageCompression, Options, SpiceClient};
use vmm_tests::*;

/// Reboots in the C30 test: `REBOOTS` (tests/soak-reboot.sh sets 300), 20 by default.
fn reboots() -> usize {
    std::env::var("REBOOTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(20)
}

/// Bounds a run of `reboots` reboots (each takes well under a second here).
fn timeout(reboots: usize) -> Duration {
    Duration::from_secs(120 + 3 * reboots as u64)
}

fn vmm_with_rebooting_guest(extra: &[&str]) -> Command {
    let mut cmd = Command::new(vmm_binary());
    cmd.arg("--kernel").arg(qxlbench_guest().unwrap());
    cmd.args(["--memory", "size=256M", "--cmdline", "qb.reboot"]);
    cmd.args(extra);
    cmd
}

/// Sizes of the anonymous mappings that hold guest memory: the RAM (256 MiB) and the QXL
/// device's RAM and surface BARs (64 MiB each). Each boot maps them anew and the guest
/// touches a varying part of them before the sample, so they are left out of the VMM's own
/// resident memory.
const GUEST_MAPPINGS: [u64; 2] = [256 << 20, 64 << 20];

/// Threads, open descriptors and the VMM's own resident KiB (all but guest memory) of
/// process `pid`.
fn footprint(pid: u32) -> (usize, usize, u64) {
    let count = |dir: String| std::fs::read_dir(dir).map_or(0, Iterator::count);
    let threads = count(format!("/proc/{pid}/task"));
    (threads, count(format!("/proc/{pid}/fd")), own_rss_kib(pid))
}

/// Resident KiB of `pid`'s mappings, without the guest memory mappings.
fn own_rss_kib(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut guest = false;
    let mut total = 0;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-') {
            // A mapping's header: "start-end perms offset dev inode [path]".
            let size = u64::from_str_radix(end, 16).unwrap_or(0)
                - u64::from_str_radix(start, 16).unwrap_or(0);
            let anonymous = words.nth(4).is_none();
            guest = anonymous && GUEST_MAPPINGS.contains(&size);
        } else if first == "Rss:" && !guest {
            total += words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    total
}

/// The footprint over two seconds of sampling, several boot cycles: the most threads and
/// descriptors seen (every thread of a running VM alive, whatever the phase of the first
/// sample), and the least resident memory. The peak of memory depends on whether a sample
/// lands where one boot's buffers are freed and the next one's allocated, which varies by
/// more than 10 %; the trough is what stays between boots, where a leak would show.
fn footprint_over_cycles(pid: u32) -> (usize, usize, u64) {
    let mut peak = (0, 0, u64::MAX);
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        let now = footprint(pid);
        peak = (peak.0.max(now.0), peak.1.max(now.1), peak.2.min(now.2));
        std::thread::sleep(Duration::from_millis(10));
    }
    peak
}

/// Waits until the guest has rebooted `n` times in all.
fn wait_reboots(vmm: &mut Session, n: usize) {
    let deadline = Instant::now() + timeout(n);
    while vmm.output().matches("QB-REBOOT").count() < n {
        assert!(
            Instant::now() < deadline,
            "only {} reboots",
            vmm.output().matches("QB-REBOOT").count()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// C30: 20 reboots (or `REBOOTS`) with a SPICE client connected. The client is never dropped
/// and keeps receiving each boot's screen; threads and descriptors end where they started and
/// resident memory stays within 5 %.
#[test]
fn c30_reboots_keep_the_client_and_leak_nothing() {
    if !require_kvm("c30_reboots_keep_the_client_and_leak_nothing") {
        return;
    }
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spice = format!("port={port},disable-ticketing=on");
    let n = reboots();
    let cmd = vmm_with_rebooting_guest(&["--spice", &spice]);
    let mut vmm = Session::spawn(cmd, timeout(n) + Duration::from_secs(60)).unwrap();
    let options = Options {
        password: None,
        timeout: Duration::from_secs(30),
        compression: Some(ImageCompression::Lz4),
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // The server starts listening shortly after the process starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        match SpiceClient::connect_with(addr, &options) {
            Ok(client) => break client,
            Err(e) if Instant::now() > deadline => panic!("cannot connect: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };

    // The heap grows over the first boots to where it stays (up to 20 % seen), so the
    // baseline comes after half the reboots; a leak keeps growing through the second half.
    let warm = 3 + n / 2;
    wait_reboots(&mut vmm, warm);
    let before = footprint_over_cycles(vmm.pid());
    let messages = client.stats().display_messages;
    wait_reboots(&mut vmm, warm + n);
    let after = footprint_over_cycles(vmm.pid());
    eprintln!(
        "threads, descriptors (peaks), own RSS KiB (trough): {before:?} after {warm} reboots, \
         {after:?} after {}",
        warm + n
    );

    assert_eq!(after.0, before.0, "threads");
    assert_eq!(after.1, before.1, "open descriptors");
    // C30 asks for RSS within 5 % (the VMM's own, without guest memory); 256 KiB more allow
    // for the sampling.
    let limit = before.2 + before.2 / 20 + 256;
    assert!(
        after.2 <= limit,
        "resident memory {} KiB, over {limit}",
        after.2
    );
    assert!(
        client.failure().is_none(),
        "the client was dropped: {:?}",
        client.failure()
    );
    let received = client.stats().display_messages - messages;
    assert!(
        received > 2000,
        "the client saw the boots draw ({received} messages)"
    );
}

/// With --no-reboot, the guest's reset ends the VMM with status 0.
#[test]
fn no_reboot_ends_the_vmm_at_the_first_reset() {
    if !require_kvm("no_reboot_ends_the_vmm_at_the_first_reset") {
        return;
    }
    let cmd = vmm_with_rebooting_guest(&["--no-reboot"]);
    let (status, output) = run_to_end(cmd, Duration::from_secs(60)).unwrap();
    assert_eq!(status.code(), Some(0), "{output}");
    assert_eq!(output.matches("QB-REBOOT").count(), 1, "{output}");
}
