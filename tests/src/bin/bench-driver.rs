// SPDX-License-Identifier: Apache-2.0
//! Benchmarks the guest's qxl driver: Debian's stock driver against the one patched by
//! guest-drivers/, on the same display workloads, side by side in one run.
//!
//! Usage: `bench-driver [RUNS]` (boots of each driver, alternating; default 3).
//! `tests/bench-driver.sh` builds what this needs and runs it inside the nested-KVM test host
//! when this machine's /dev/kvm cannot boot Linux.
//!
//! Each boot starts the vmm (`$VMM_BIN`, default `target/release/vmm`) with
//! `target/guest/bzImage`, 512 MiB, one vCPU and either `initramfs.cpio.gz` (stock driver) or
//! `initramfs-patched-qxl.cpio.gz` (patched), and waits for the guest's shell on the serial
//! console. Then, for each workload, the guest starts it in the background, and after a
//! warm-up the benchmark reads `query-qxl`, waits, and reads it again. The workloads:
//! - text: `cat /proc/interrupts` to the fbcon console in a loop;
//! - frames: 1024x768x4 bytes of /dev/urandom to /dev/fb0 in a loop.
//!
//! From the two readings, per second: drawables the device rendered (the guest's drawing
//! rate), interrupts the device raised, port writes that exited to the vmm, and ring
//! doorbells KVM delivered through ioeventfds without an exit; and the vCPU-side QXL time per
//! exiting write (exit to re-entry, the mean of the interval) and per second. The table gives
//! min / median / max over the runs for each driver and the patched/stock ratio of the
//! medians. Exits with 1 when a boot or a phase failed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use vmm_tests::qmp::Qmp;
use vmm_tests::stats::summary;
use vmm_tests::{repo_root, Session, TEST_CMDLINE};

const DEFAULT_RUNS: usize = 3;

/// A file of the test guest. Not `vmm_tests::guest_file`, which builds the guest first: the
/// benchmark may run in the test host, where the repository is read-only;
/// tests/bench-driver.sh builds it.
fn guest_file(name: &str) -> PathBuf {
    repo_root().join("target/guest").join(name)
}
/// A boot's process is killed at this age at the latest.
const DEADLINE: Duration = Duration::from_secs(600);
/// How long the guest may take to reach its shell.
const BOOT_LIMIT: Duration = Duration::from_secs(300);
/// Time for a workload to get going before the first reading.
const WARMUP: Duration = Duration::from_secs(3);
/// Time between the two readings.
const PHASE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    Stock,
    Patched,
}

impl Driver {
    fn initramfs(self) -> &'static str {
        match self {
            Driver::Stock => "initramfs.cpio.gz",
            Driver::Patched => "initramfs-patched-qxl.cpio.gz",
        }
    }
}

/// A workload: its name and the shell line that starts it in the background.
const WORKLOADS: [(&str, &str); 2] = [
    (
        "text",
        "while :; do cat /proc/interrupts; done >/dev/tty0 2>&1 &",
    ),
    (
        "frames",
        "while :; do dd if=/dev/urandom of=/dev/fb0 bs=3145728 count=1 2>/dev/null; done &",
    ),
];

/// The figures of one workload phase.
const FIGURES: [&str; 6] = [
    "drawables/s",
    "interrupts/s",
    "port exits/s",
    "doorbells/s (ioeventfd)",
    "vCPU us per exit",
    "vCPU us per s",
];

/// One reading of `query-qxl`: the counters the figures come from.
#[derive(Clone, Copy, Debug, Default)]
struct Reading {
    drawables: f64,
    interrupts: f64,
    exits: f64,
    doorbells: f64,
    vcpu_ns: f64,
}

impl Reading {
    fn take(qmp: &mut Qmp) -> Result<Reading> {
        let reply = qmp.call(r#"{"execute":"query-qxl"}"#)?;
        let number = |v: &Value| v.as_u64().map(|n| n as f64).context("not a number");
        let ports = reply["ports"].as_array().context("no ports")?;
        let mut reading = Reading {
            drawables: number(&reply["engine"]["drawables"])?,
            interrupts: number(&reply["interrupts"])?,
            doorbells: number(&reply["ioeventfd-notifies"])?,
            ..Reading::default()
        };
        for port in ports {
            reading.exits += number(&port["count"])?;
            reading.vcpu_ns += number(&port["total-ns"])?;
        }
        Ok(reading)
    }

    /// The figures, in [`FIGURES`] order, from `self` to `later` over `seconds`.
    fn figures(&self, later: &Reading, seconds: f64) -> [f64; 6] {
        let exits = later.exits - self.exits;
        let vcpu_us = (later.vcpu_ns - self.vcpu_ns) / 1000.0;
        [
            (later.drawables - self.drawables) / seconds,
            (later.interrupts - self.interrupts) / seconds,
            exits / seconds,
            (later.doorbells - self.doorbells) / seconds,
            if exits > 0.0 { vcpu_us / exits } else { 0.0 },
            vcpu_us / seconds,
        ]
    }
}

/// Results: (driver, workload index) -> one figure array per successful run.
type Results = Vec<(Driver, usize, [f64; 6])>;

fn main() {
    let runs = match std::env::args().nth(1).map(|a| a.parse::<usize>()) {
        None => DEFAULT_RUNS,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: bench-driver [RUNS]");
            std::process::exit(2);
        }
    };
    let vmm = match vmm_binary() {
        Ok(vmm) => vmm,
        Err(e) => {
            eprintln!("bench-driver: {e:#}");
            std::process::exit(1);
        }
    };

    let mut results = Results::new();
    let mut failures = 0;
    for run in 0..runs {
        let order = if run % 2 == 0 {
            [Driver::Stock, Driver::Patched]
        } else {
            [Driver::Patched, Driver::Stock]
        };
        for driver in order {
            eprintln!("run {}/{runs}: {driver:?} driver", run + 1);
            match measure(&vmm, driver, run) {
                Ok(figures) => results.extend(figures),
                Err(e) => {
                    failures += 1;
                    eprintln!("run {}, {driver:?} driver: FAILED: {e:#}", run + 1);
                }
            }
        }
    }
    print_table(&results, runs);
    if failures > 0 {
        eprintln!("{failures} boots failed");
        std::process::exit(1);
    }
}

fn vmm_binary() -> Result<PathBuf> {
    let vmm = std::env::var_os("VMM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/vmm"));
    for (path, hint) in [
        (vmm.clone(), "cargo build --release -p vmm (or set VMM_BIN)"),
        (guest_file("bzImage"), "resources/build-guest.sh"),
        (
            guest_file(Driver::Patched.initramfs()),
            "resources/build-guest.sh --patched-qxl",
        ),
    ] {
        if !path.is_file() {
            bail!("{} is missing: run {hint}", path.display());
        }
    }
    Ok(vmm)
}

/// Boots the guest with `driver` and measures every workload.
fn measure(vmm: &Path, driver: Driver, run: usize) -> Result<Results> {
    let socket = std::env::temp_dir().join(format!(
        "bench-driver-{}-{run}-{driver:?}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&socket);
    let mut cmd = Command::new(vmm);
    cmd.arg("--api-socket").arg(&socket);
    cmd.arg("--kernel").arg(guest_file("bzImage"));
    cmd.arg("--initramfs").arg(guest_file(driver.initramfs()));
    cmd.args(["--memory", "512M", "--cpus", "1", "--display", "qxl"]);
    cmd.args(["--cmdline", TEST_CMDLINE, "--serial", "tty"]);
    let mut guest = Session::spawn(cmd, DEADLINE)?;
    let mut seen = guest.expect_after(0, "VMM-GUEST-READY", BOOT_LIMIT)?;
    let mut qmp = Qmp::connect(&socket, Duration::from_secs(10), Duration::from_secs(10))?;

    let mut results = Results::new();
    for (index, (name, start)) in WORKLOADS.iter().enumerate() {
        guest.send(&format!("{start} echo BENCH-START-{name}\n"))?;
        seen = guest.expect_after(
            seen,
            &format!("BENCH-START-{name}"),
            Duration::from_secs(60),
        )?;
        std::thread::sleep(WARMUP);
        let before = Reading::take(&mut qmp)?;
        let started = std::time::Instant::now();
        std::thread::sleep(PHASE);
        let after = Reading::take(&mut qmp)?;
        let seconds = started.elapsed().as_secs_f64();
        guest.send(&format!(
            "kill $!; wait $! 2>/dev/null; echo BENCH-STOP-{name}\n"
        ))?;
        seen = guest.expect_after(seen, &format!("BENCH-STOP-{name}"), Duration::from_secs(60))?;

        let figures = before.figures(&after, seconds);
        if figures[0] <= 0.0 {
            bail!("{name}: the device rendered nothing in {seconds:.1} s");
        }
        eprintln!("  {name}: {}", describe(&figures));
        results.push((driver, index, figures));
    }
    let _ = guest.send("poweroff -f\n");
    let _ = std::fs::remove_file(&socket);
    Ok(results)
}

fn describe(figures: &[f64; 6]) -> String {
    let parts: Vec<String> = FIGURES
        .iter()
        .zip(figures)
        .map(|(name, value)| format!("{name} {value:.1}"))
        .collect();
    parts.join(", ")
}

fn print_table(results: &Results, runs: usize) {
    println!();
    println!(
        "qxl driver benchmark: {runs} boots of each driver, {} s per workload \
         (min / median / max over the boots; ratio = patched median / stock median)",
        PHASE.as_secs()
    );
    println!(
        "{:<8} {:<24} {:>30} {:>30} {:>7}",
        "workload", "figure", "stock", "patched", "ratio"
    );
    for (index, (workload, _)) in WORKLOADS.iter().enumerate() {
        for (f, figure) in FIGURES.iter().enumerate() {
            let values = |driver: Driver| -> Vec<f64> {
                results
                    .iter()
                    .filter(|(d, w, _)| *d == driver && *w == index)
                    .map(|(_, _, figures)| figures[f])
                    .collect()
            };
            let stock = summary(&values(Driver::Stock));
            let patched = summary(&values(Driver::Patched));
            let ratio = match (stock, patched) {
                (Some(s), Some(p)) if s[1] > 0.0 => format!("{:.2}", p[1] / s[1]),
                _ => "-".into(),
            };
            println!(
                "{workload:<8} {figure:<24} {:>30} {:>30} {ratio:>7}",
                cell(stock),
                cell(patched)
            );
        }
    }
}

fn cell(summary: Option<[f64; 3]>) -> String {
    match summary {
        Some([min, median, max]) => format!("{min:.1} / {median:.1} / {max:.1}"),
        None => "no data".into(),
    }
}
