// SPDX-License-Identifier: Apache-2.0
//! Benchmarks the vCPU side of QXL port writes directly on this machine's /dev/kvm, with a
//! small guest of the project's own instead of Linux (`tests/guest/qxlbench.c`, which runs at
//! CPL 0 and uses only instructions that every KVM backend can run or emulate).
//!
//! Usage: `bench-qxl [RUNS]` (default 5); `tests/bench-qxl.sh` builds what it needs. The vmm
//! is `$VMM_BIN` (default `target/release/vmm`).
//!
//! Each run does two things, one after the other:
//! 1. The baseline, a bare KVM VM run by this program's own loop (no vmm code): the guest
//!    times `out` to a port that exits to user space and does nothing, and `out` to a port
//!    bound to an ioeventfd that nobody reads.
//! 2. The vmm with its QXL device: the guest sets the device up as a driver does (PCI, MSI,
//!    memslot, primary surface) and then, 1000 times, puts a 16x16 DRAW_COPY on the command
//!    ring, writes NOTIFY_CMD (an ioeventfd), UPDATE_AREA_ASYNC, waits for the interrupt and
//!    writes UPDATE_IRQ. It also times the same do-nothing port exit inside the vmm. Then it
//!    keeps drawing while this program times `query-status` on the control socket (at least
//!    1000 requests), and halts; `query-status` is timed again on the idle VM.
//!
//! The guest times each write with the TSC, from before the `out` to after it: what the guest
//! sees, exit and re-entry included. Two back-to-back TSC reads are timed too, and their median
//! is taken off every sample. `query-qxl` adds the vmm's own view: exit to re-entry per port.
//! The report gives min / median / max over the runs of each figure's per-run p50 and p99,
//! the ratios the project targets, and whether each target is met.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VcpuExit};
use linux_loader::loader::{Elf, KernelLoader};
use serde_json::Value;
use vm_memory::GuestAddress;
use vmm::arch::{cpuid, regs};
use vmm_sys_util::eventfd::EventFd;
use vmm_tests::qmp::Qmp;
use vmm_tests::stats::{percentile, summary};

const DEFAULT_RUNS: usize = 5;
const GUEST_MIB: u64 = 256;
/// The port the guest uses for a plain exit, and the one bound to an ioeventfd in the bare VM.
const BARE_IOEVT_PORT: u64 = 0x81;
const COM1: u16 = 0x3f8;
/// Requests of `query-status` timed idle and under load.
const API_REQUESTS: usize = 1000;
/// The least time the load phase lasts.
const LOAD_MIN: Duration = Duration::from_secs(2);
/// A whole vmm run is killed at this age.
const DEADLINE: Duration = Duration::from_secs(300);
/// Targets: guest-visible p99 of a port against its baseline's p99, and `query-status` p99 under
/// load against idle.
const PORT_TARGET: f64 = 1.5;
const API_TARGET: f64 = 2.0;

/// The guest's samples by phase, in TSC cycles.
type Phases = HashMap<String, Vec<u64>>;

/// One run's figures, each a (p50, p99) pair in microseconds unless named otherwise.
#[derive(Default)]
struct Run {
    guest: HashMap<&'static str, (f64, f64)>,
    /// query-qxl: port name -> (p50, p99) of exit to re-entry, in microseconds.
    host: HashMap<String, (f64, f64)>,
    api_idle: (f64, f64),
    api_load: (f64, f64),
    load_rounds: u64,
}

fn main() -> Result<()> {
    let (runs, guest, vmm) = vmm_tests::bench_setup("bench-qxl", DEFAULT_RUNS)?;
    let tsc_mhz = vmm_tests::tsc::mhz();
    println!(
        "bench-qxl: {runs} runs, TSC {tsc_mhz:.0} MHz, guest {}",
        guest.display()
    );

    let mut results = Vec::new();
    for run in 1..=runs {
        let mut figures = Run::default();
        let bare = run_bare(&guest).context("the bare KVM baseline")?;
        put_guest(
            &mut figures,
            &bare,
            tsc_mhz,
            &[("bare-exit", "kvm-exit"), ("bare-ioevt", "kvm-ioevt")],
        );
        run_vmm(&vmm, &guest, tsc_mhz, &mut figures).context("the vmm run")?;
        println!(
            "run {run}/{runs} done ({} load rounds)",
            figures.load_rounds
        );
        results.push(figures);
    }
    report(&results);
    Ok(())
}

/// Runs the guest in a VM of this program's own: long mode as the vmm sets it up, no
/// interrupt controller, no devices, an ioeventfd on port 0x81.
fn run_bare(elf: &Path) -> Result<Phases> {
    let kvm = Kvm::new().context("open /dev/kvm")?;
    let vm = kvm.create_vm().context("create a VM")?;
    // The vmm's own guest RAM set-up: one region at 0, registered with KVM.
    let mem = vmm::builder::create_memory(&vm, GUEST_MIB << 20)?;

    let mut file = File::open(elf)?;
    let loaded = Elf::load(&mem, None, &mut file, Some(GuestAddress(1 << 20)))?;
    regs::write_boot_structures(&mem)?;
    let mut vcpu = vm.create_vcpu(0)?;
    let supported = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)?;
    vcpu.set_cpuid2(&cpuid::vcpu_cpuid(&supported, 0, 1))?;
    regs::setup_msrs(&vcpu, kvm.get_msr_index_list()?.as_slice())?;
    regs::setup_fpu(&vcpu)?;
    regs::setup_boot_vcpu(&vcpu, loaded.kernel_load)?;

    let ioevt = EventFd::new(libc::EFD_NONBLOCK)?;
    vm.register_ioevent(&ioevt, &IoEventAddress::Pio(BARE_IOEVT_PORT), NoDatamatch)?;

    let mut console = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    loop {
        match vcpu.run().context("KVM_RUN")? {
            VcpuExit::IoOut(COM1, data) => console.extend_from_slice(data),
            VcpuExit::IoOut(..) | VcpuExit::MmioWrite(..) => {}
            // The line status register says "transmitter empty"; the rest reads as absent.
            VcpuExit::IoIn(port, data) => data.fill(if port == COM1 + 5 { 0x20 } else { 0xff }),
            VcpuExit::MmioRead(_, data) => data.fill(0xff),
            VcpuExit::Hlt => break,
            other => bail!("unexpected exit {other:?}"),
        }
        if Instant::now() > deadline {
            bail!("the guest did not halt within {DEADLINE:?}");
        }
    }
    parse_console(&String::from_utf8_lossy(&console))
}

/// Splits the guest's console into phases; a `QB-ERROR` line or no `QB-DONE` is an error.
fn parse_console(text: &str) -> Result<Phases> {
    let mut phases = Phases::new();
    for line in text.lines() {
        if line.starts_with("QB-ERROR") {
            bail!("the guest failed: {line}");
        }
        phase_sample(line, &mut phases);
    }
    if !text.contains("QB-DONE") {
        bail!(
            "the guest did not finish; its console ended with: {}",
            tail(text)
        );
    }
    Ok(phases)
}

fn phase_sample(line: &str, phases: &mut Phases) {
    let mut words = line.split(' ');
    if let (Some("Q"), Some(phase), Some(value)) = (words.next(), words.next(), words.next()) {
        if let Ok(v) = value.parse() {
            phases.entry(phase.to_string()).or_default().push(v);
        }
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Stores (p50, p99) of the guest phases named in `names` (phase, figure), in microseconds,
/// less the median cost of the TSC reads.
fn put_guest(run: &mut Run, phases: &Phases, mhz: f64, names: &[(&str, &'static str)]) {
    let overhead = phases.get("tsc").map_or(0, |t| percentile(t, 50));
    for (phase, figure) in names {
        let Some(samples) = phases.get(*phase) else {
            continue;
        };
        let us = |p| percentile(samples, p).saturating_sub(overhead) as f64 / mhz;
        run.guest.insert(figure, (us(50), us(99)));
    }
}

/// The vmm and its console, read line by line on a thread.
struct VmmProcess {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    console: String,
    started: Instant,
}

impl VmmProcess {
    fn spawn(vmm: &Path, guest: &Path, socket: &Path) -> Result<Self> {
        let mut child = Command::new(vmm)
            .arg("--kernel")
            .arg(guest)
            .args(["--memory", "size=256M", "--api-socket"])
            .arg(socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("run {}", vmm.display()))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(VmmProcess {
            child,
            stdin,
            lines,
            console: String::new(),
            started: Instant::now(),
        })
    }

    /// Reads console lines until one starts with `marker`, which it returns.
    fn expect(&mut self, marker: &str) -> Result<String> {
        loop {
            let left = DEADLINE.saturating_sub(self.started.elapsed());
            let line = self.lines.recv_timeout(left).with_context(|| {
                format!(
                    "no {marker} from the guest; console: {}",
                    tail(&self.console)
                )
            })?;
            self.console.push_str(&line);
            self.console.push('\n');
            if line.starts_with("QB-ERROR") {
                bail!("the guest failed: {line}");
            }
            if line.starts_with(marker) {
                return Ok(line);
            }
        }
    }
}

impl Drop for VmmProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_vmm(vmm: &Path, guest: &Path, mhz: f64, run: &mut Run) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("bench-qxl-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("api.sock");
    let _ = std::fs::remove_file(&socket);
    let mut process = VmmProcess::spawn(vmm, guest, &socket)?;
    let mut api = Qmp::connect(&socket, Duration::from_secs(10), Duration::from_secs(10))?;

    process.expect("QB-LOAD-START")?;
    let mut load = Vec::with_capacity(API_REQUESTS);
    let began = Instant::now();
    while load.len() < API_REQUESTS || began.elapsed() < LOAD_MIN {
        load.push(api.time_query_status()?);
    }
    process.stdin.write_all(b"x")?;
    let end = process.expect("QB-LOAD-END")?;
    run.load_rounds = end
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    process.expect("QB-DONE")?;

    let idle = (0..API_REQUESTS)
        .map(|_| api.time_query_status())
        .collect::<Result<Vec<_>>>()?;
    let qxl = api.call(r#"{"execute":"query-qxl"}"#)?;
    let _ = api.call(r#"{"execute":"quit"}"#);

    let phases = parse_console(&process.console)?;
    let names = [
        ("bare-exit", "vmm-exit"),
        ("notify-cmd", "NOTIFY_CMD"),
        ("update-area-async", "UPDATE_AREA_ASYNC"),
        ("update-irq", "UPDATE_IRQ"),
    ];
    put_guest(run, &phases, mhz, &names);
    run.api_idle = pair_us(&idle);
    run.api_load = pair_us(&load);
    put_host(run, &qxl);
    Ok(())
}

fn pair_us(ns: &[u64]) -> (f64, f64) {
    (
        percentile(ns, 50) as f64 / 1e3,
        percentile(ns, 99) as f64 / 1e3,
    )
}

/// query-qxl's per-port exit-to-re-entry figures (log2 bucket bounds).
fn put_host(run: &mut Run, qxl: &Value) {
    let ports = qxl
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for port in ports {
        let name = port
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        let ns = |key| port.get(key).and_then(Value::as_u64).unwrap_or(0) as f64 / 1e3;
        run.host.insert(name, (ns("p50-ns"), ns("p99-ns")));
    }
}

fn report(runs: &[Run]) {
    println!("\nguest-visible time of one write, exit and re-entry included (us):");
    println!(
        "{:<34} {:>26} {:>26}",
        "", "p50 min/median/max", "p99 min/median/max"
    );
    let rows = [
        ("kvm-exit", "bare KVM: port exit"),
        ("kvm-ioevt", "bare KVM: ioeventfd write"),
        ("vmm-exit", "vmm: unclaimed port exit"),
        ("UPDATE_AREA_ASYNC", "vmm: UPDATE_AREA_ASYNC"),
        ("UPDATE_IRQ", "vmm: UPDATE_IRQ"),
        ("NOTIFY_CMD", "vmm: NOTIFY_CMD (ioeventfd)"),
    ];
    for (key, label) in rows {
        row(label, runs, |r| r.guest.get(key).copied());
    }

    println!("\nvmm side, exit to re-entry (query-qxl, log2 bucket bounds, us):");
    for port in [
        "UPDATE_AREA_ASYNC",
        "UPDATE_IRQ",
        "MEMSLOT_ADD_ASYNC",
        "CREATE_PRIMARY_ASYNC",
    ] {
        row(port, runs, |r| r.host.get(port).copied());
    }

    println!("\nquery-status on the control socket, {API_REQUESTS}+ requests each (us):");
    row("idle", runs, |r| Some(r.api_idle));
    row("guest drawing", runs, |r| Some(r.api_load));

    println!("\ntargets (median over runs of each run's ratio):");
    let p99 = |key: &'static str| move |r: &Run| r.guest.get(key).map(|f| f.1);
    target(
        runs,
        "UPDATE_AREA_ASYNC p99 / bare KVM exit p99",
        PORT_TARGET,
        p99("UPDATE_AREA_ASYNC"),
        p99("kvm-exit"),
    );
    target(
        runs,
        "UPDATE_IRQ p99 / bare KVM exit p99",
        PORT_TARGET,
        p99("UPDATE_IRQ"),
        p99("kvm-exit"),
    );
    target(
        runs,
        "NOTIFY_CMD p99 / bare ioeventfd p99",
        PORT_TARGET,
        p99("NOTIFY_CMD"),
        p99("kvm-ioevt"),
    );
    target(
        runs,
        "query-status p99 drawing / idle",
        API_TARGET,
        |r| Some(r.api_load.1),
        |r| Some(r.api_idle.1),
    );
}

fn row(label: &str, runs: &[Run], figure: impl Fn(&Run) -> Option<(f64, f64)>) {
    let values: Vec<(f64, f64)> = runs.iter().filter_map(&figure).collect();
    let p50: Vec<f64> = values.iter().map(|v| v.0).collect();
    let p99: Vec<f64> = values.iter().map(|v| v.1).collect();
    let show = |v: &[f64]| match summary(v) {
        Some([lo, mid, hi]) => format!("{lo:.1} / {mid:.1} / {hi:.1}"),
        None => "-".into(),
    };
    println!("{label:<34} {:>26} {:>26}", show(&p50), show(&p99));
}

fn target(
    runs: &[Run],
    label: &str,
    limit: f64,
    num: impl Fn(&Run) -> Option<f64>,
    den: impl Fn(&Run) -> Option<f64>,
) {
    let ratios: Vec<f64> = runs
        .iter()
        .filter_map(|r| Some(num(r)? / den(r)?))
        .filter(|r| r.is_finite())
        .collect();
    match summary(&ratios) {
        Some([lo, mid, hi]) => {
            let verdict = if mid <= limit { "met" } else { "NOT met" };
            println!("{label:<44} {mid:.2}x (runs {lo:.2}-{hi:.2}), target <= {limit}x: {verdict}");
        }
        None => println!("{label:<44} no figures"),
    }
}
