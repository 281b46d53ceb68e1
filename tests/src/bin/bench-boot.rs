// SPDX-License-Identifier: Apache-2.0
//! Benchmarks the vmm against QEMU with KVM on the same guest: boot time, resident memory, and
//! the latency of the control socket while the guest draws on its QXL display.
//!
//! Usage: `bench-boot [RUNS]` (runs of each VMM, default 5). `tests/bench-boot.sh` builds what
//! this needs and runs it inside the nested-KVM test host when this machine's /dev/kvm cannot
//! boot Linux; run directly, it refuses such a /dev/kvm.
//!
//! Each run boots `target/guest/bzImage` and `initramfs.cpio.gz` with 512 MiB, one vCPU and the
//! test command line, either under the vmm (`$VMM_BIN`, default `target/release/vmm`) or under
//! `qemu-system-x86_64 -accel kvm -cpu host`, alternating the two so that both see the same
//! noise. Per run it measures:
//! - boot time: from spawning the process to `VMM-GUEST-READY` on the guest's serial console
//!   (the process's stdout);
//! - memory, 3 s after the marker while the guest idles at its shell, from /proc/PID/smaps: the
//!   total RSS, and the VMM's own part, which is the total minus the resident part of the
//!   anonymous guest RAM mapping (exactly 512 MiB for the vmm; 512 MiB to 512 MiB + 4 MiB for
//!   QEMU, whose RAM block may carry alignment).
//!
//! Then `query-status` is timed on the control socket (the vmm's `--api-socket`, QEMU's QMP), at
//! least 1000 requests with the guest idle at its shell, and again while the guest writes text
//! to its fbcon console without pause, so that the stock qxl driver keeps both QXL devices
//! busy (QEMU runs `-vga qxl` with SPICE on a Unix socket and no client). For the vmm,
//! `query-qxl` then gives each QXL port's vCPU-side time, exit to re-entry.
//!
//! The process group is then killed with SIGKILL. A run that has not printed the marker within
//! its deadline is killed and counted as failed, as is one that exits early; each failure is
//! printed with its reason and the end of the output. The result is a table of min / median /
//! max per figure, the qemu/vmm ratios of the medians and the project's targets (boot at least
//! twice as fast as QEMU, the vmm's own memory under 5 MiB, `query-status` p99 under load within
//! 2x of idle and below QEMU's). Exits with 1 when a run failed.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vmm_tests::qmp::Qmp;
use vmm_tests::stats::{percentile, summary};
use vmm_tests::{repo_root, TEST_CMDLINE};

/// What the guest's /init prints on the console once it is up.
const MARKER: &[u8] = b"VMM-GUEST-READY";
/// Guest RAM.
const GUEST_MIB: u64 = 512;
/// How much larger than the guest RAM QEMU's RAM mapping may be.
const QEMU_RAM_SLACK_MIB: u64 = 4;
/// Idle time between the marker and the memory reading.
const SETTLE: Duration = Duration::from_secs(3);
/// A run's process is killed at this age at the latest.
const DEADLINE: Duration = Duration::from_secs(180);
const DEFAULT_RUNS: usize = 5;
const QEMU: &str = "qemu-system-x86_64";
/// Targets: QEMU's median boot time over the vmm's, and the vmm's own median RSS.
const BOOT_SPEEDUP_TARGET: f64 = 2.0;
const OWN_MEMORY_TARGET_MIB: f64 = 5.0;
const MIB: f64 = 1024.0;
/// `query-status` requests timed in each phase.
const API_REQUESTS: usize = 1000;
/// What the guest runs on its serial shell to draw: fbcon text, as fast as it goes.
const DRAW_WORKLOAD: &[u8] = b"while :; do cat /proc/interrupts; done >/dev/tty0 2>&1 &\n";
/// The longest one phase of `query-status` timing may take.
const API_PHASE_LIMIT: Duration = Duration::from_secs(120);
/// Time for the workload to get going before the timing starts.
const WORKLOAD_WARMUP: Duration = Duration::from_secs(2);
/// Targets for `query-status` p99: under load against idle, and under load against QEMU's.
const API_LOAD_TARGET: f64 = 2.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Monitor {
    Vmm,
    Qemu,
}

impl Monitor {
    fn name(self) -> &'static str {
        match self {
            Monitor::Vmm => "vmm",
            Monitor::Qemu => "qemu",
        }
    }

    /// Whether an anonymous mapping of `bytes` is this monitor's guest RAM.
    fn is_guest_ram(self, bytes: u64) -> bool {
        let ram = GUEST_MIB << 20;
        match self {
            Monitor::Vmm => bytes == ram,
            Monitor::Qemu => (ram..=ram + (QEMU_RAM_SLACK_MIB << 20)).contains(&bytes),
        }
    }
}

/// The binaries and guest files every run uses.
struct Setup {
    vmm: PathBuf,
    kernel: PathBuf,
    initramfs: PathBuf,
}

impl Setup {
    fn find() -> Result<Setup> {
        let root = repo_root();
        let vmm = std::env::var_os("VMM_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/release/vmm"));
        let setup = Setup {
            vmm,
            kernel: root.join("target/guest/bzImage"),
            initramfs: root.join("target/guest/initramfs.cpio.gz"),
        };
        for (path, hint) in [
            (&setup.vmm, "cargo build --release -p vmm (or set VMM_BIN)"),
            (&setup.kernel, "resources/build-guest.sh"),
            (&setup.initramfs, "resources/build-guest.sh"),
        ] {
            if !path.is_file() {
                bail!("{} is missing: run {hint}", path.display());
            }
        }
        Ok(setup)
    }

    /// The command line of `monitor`, its control socket at `socket`.
    fn command(&self, monitor: Monitor, socket: &Path) -> Command {
        match monitor {
            Monitor::Vmm => self.vmm_command(socket),
            Monitor::Qemu => self.qemu_command(socket),
        }
    }

    fn vmm_command(&self, socket: &Path) -> Command {
        let mut cmd = Command::new(&self.vmm);
        cmd.arg("--api-socket").arg(socket);
        cmd.arg("--kernel").arg(&self.kernel);
        cmd.arg("--initramfs").arg(&self.initramfs);
        cmd.args(["--memory", &format!("{GUEST_MIB}M"), "--cpus", "1"]);
        cmd.args(["--cmdline", TEST_CMDLINE, "--serial", "tty"]);
        cmd
    }

    fn qemu_command(&self, socket: &Path) -> Command {
        let mut cmd = Command::new(QEMU);
        cmd.arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", socket.display()));
        // The same display device as the vmm's; its SPICE server needs somewhere to listen.
        let spice = socket.with_extension("spice");
        cmd.args(["-vga", "qxl", "-spice"]);
        cmd.arg(format!(
            "unix=on,addr={},disable-ticketing=on",
            spice.display()
        ));
        cmd.args(["-accel", "kvm", "-cpu", "host", "-smp", "1"]);
        cmd.args(["-m", &GUEST_MIB.to_string()]);
        // No default devices, hence no monitor: stdio carries the serial port only.
        cmd.args(["-nodefaults", "-no-user-config", "-display", "none"]);
        cmd.args(["-serial", "stdio"]);
        cmd.arg("-kernel").arg(&self.kernel);
        cmd.arg("-initrd").arg(&self.initramfs);
        cmd.args(["-append", TEST_CMDLINE]);
        cmd
    }
}

/// A VMM process under measurement; its process group is killed when it is dropped.
struct Guest {
    child: Child,
    /// The guest's serial console input.
    console: Option<std::process::ChildStdin>,
    started: Instant,
    /// When the marker arrived on stdout; disconnected when stdout closes without it.
    ready: Receiver<Instant>,
    /// stdout and stderr, merged as they arrive.
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Guest {
    fn spawn(mut cmd: Command) -> Result<Guest> {
        // stdin stays an open, silent pipe: no terminal to put in raw mode, no end of file.
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", cmd.get_program().to_string_lossy()))?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let (marker_tx, ready) = mpsc::channel();
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            readers.push(read_output(stdout, output.clone(), Some(marker_tx)));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(read_output(stderr, output.clone(), None));
        }
        let console = child.stdin.take();
        Ok(Guest {
            child,
            console,
            started,
            ready,
            output,
            readers,
        })
    }

    /// Waits for the marker; returns the time from spawning to it.
    fn boot_time(&mut self) -> Result<Duration> {
        let until = self.started + DEADLINE - SETTLE;
        match self
            .ready
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            Ok(at) => Ok(at - self.started),
            Err(RecvTimeoutError::Timeout) => bail!(
                "no VMM-GUEST-READY within {} s; the process was still running (killed); \
                 output ends with:\n{}",
                (DEADLINE - SETTLE).as_secs(),
                self.output_tail()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(200));
                let status = match self.child.try_wait()? {
                    Some(status) => format!("exited, {status}"),
                    None => "still running".to_string(),
                };
                bail!(
                    "stdout closed ({status}) {:.1} s after the start, before VMM-GUEST-READY; \
                     output ends with:\n{}",
                    self.started.elapsed().as_secs_f64(),
                    self.output_tail()
                )
            }
        }
    }

    /// Lets the guest idle, then fails if the process has ended meanwhile.
    fn settle(&mut self) -> Result<()> {
        std::thread::sleep(SETTLE);
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "exited ({status}) within {} s after VMM-GUEST-READY; output ends with:\n{}",
                SETTLE.as_secs(),
                self.output_tail()
            );
        }
        Ok(())
    }

    /// The last lines of the output, indented.
    fn output_tail(&self) -> String {
        let output = String::from_utf8_lossy(&self.output.lock().unwrap()).replace('\r', "");
        let lines: Vec<&str> = output.lines().collect();
        let tail = &lines[lines.len().saturating_sub(15)..];
        tail.iter().map(|l| format!("    | {l}\n")).collect()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // Only while the child is unreaped: its pid, hence its group's id, cannot be reused.
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                // SAFETY: kill() touches no memory of ours; the group is our child's own
                // (process_group(0) made the child its leader) and the child is not reaped.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = self.child.wait();
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

/// Copies `stream` into `output` until it closes, sending the arrival time of the marker once
/// to `marker` when given.
fn read_output(
    mut stream: impl Read + Send + 'static,
    output: Arc<Mutex<Vec<u8>>>,
    mut marker: Option<Sender<Instant>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            let now = Instant::now();
            output.lock().unwrap().extend_from_slice(&buf[..n]);
            let Some(tx) = &marker else { continue };
            // The marker may straddle two reads.
            let from = seen.len().saturating_sub(MARKER.len() - 1);
            seen.extend_from_slice(&buf[..n]);
            if seen[from..].windows(MARKER.len()).any(|w| w == MARKER) {
                let _ = tx.send(now);
                marker = None;
            }
        }
    })
}

/// Resident memory of a process, from /proc/PID/smaps.
#[derive(Default)]
struct Memory {
    total_kib: u64,
    guest_ram_kib: u64,
    guest_ram_mappings: usize,
}

fn read_memory(pid: u32, monitor: Monitor) -> Result<Memory> {
    let path = format!("/proc/{pid}/smaps");
    let smaps = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let mut memory = Memory::default();
    let mut in_guest_ram = false;
    for line in smaps.lines() {
        if let Some((bytes, anonymous)) = mapping_header(line) {
            in_guest_ram = anonymous && monitor.is_guest_ram(bytes);
            memory.guest_ram_mappings += usize::from(in_guest_ram);
        } else if let Some(value) = line.strip_prefix("Rss:") {
            let kib = parse_kib(value).with_context(|| format!("bad line in {path}: {line}"))?;
            memory.total_kib += kib;
            if in_guest_ram {
                memory.guest_ram_kib += kib;
            }
        }
    }
    match (monitor, memory.guest_ram_mappings) {
        (_, 0) => bail!("no anonymous guest RAM mapping of {GUEST_MIB} MiB in {path}"),
        (Monitor::Vmm, n @ 2..) => bail!("{n} anonymous mappings of {GUEST_MIB} MiB in {path}"),
        _ => Ok(memory),
    }
}

/// For a mapping's header line in smaps (`start-end perms offset dev inode [path]`), its size
/// in bytes and whether it is anonymous memory.
fn mapping_header(line: &str) -> Option<(u64, bool)> {
    let mut fields = line.split_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    let inode = fields.nth(3)?;
    let name = fields.next();
    let anonymous = inode == "0" && name.is_none_or(|n| n.starts_with("[anon:"));
    Some((end.checked_sub(start)?, anonymous))
}

fn parse_kib(value: &str) -> Result<u64> {
    let number = value.trim().strip_suffix("kB").context("no kB unit")?;
    Ok(number.trim().parse()?)
}

/// One successful run's figures.
struct Sample {
    boot_s: f64,
    own_mib: f64,
    total_mib: f64,
    api: ApiFigures,
    /// Resident guest RAM, and in how many mappings it was found.
    guest_ram_mib: f64,
    guest_ram_mappings: usize,
}

fn measure(setup: &Setup, monitor: Monitor) -> Result<Sample> {
    let dir = std::env::temp_dir().join(format!("bench-boot-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join(format!("{}.sock", monitor.name()));
    let _ = std::fs::remove_file(&socket);

    let mut guest = Guest::spawn(setup.command(monitor, &socket))?;
    let boot = guest.boot_time()?;
    guest.settle()?;
    let memory = read_memory(guest.child.id(), monitor)?;
    let api = measure_api(&mut guest, monitor, &socket).context("the control socket")?;
    drop(guest);
    let own_kib = memory.total_kib.saturating_sub(memory.guest_ram_kib);
    Ok(Sample {
        boot_s: boot.as_secs_f64(),
        own_mib: own_kib as f64 / MIB,
        total_mib: memory.total_kib as f64 / MIB,
        api,
        guest_ram_mib: memory.guest_ram_kib as f64 / MIB,
        guest_ram_mappings: memory.guest_ram_mappings,
    })
}

/// `query-status` round trips (p50, p99, in ms) idle and while the guest draws, and for the vmm
/// the QXL ports' exit-to-re-entry figures (name, p50, p99, in us) from `query-qxl`.
struct ApiFigures {
    idle: (f64, f64),
    load: (f64, f64),
    ports: Vec<(String, f64, f64)>,
}

fn measure_api(guest: &mut Guest, monitor: Monitor, socket: &Path) -> Result<ApiFigures> {
    let mut qmp = Qmp::connect(socket, Duration::from_secs(10), Duration::from_secs(10))?;
    let idle = time_status(&mut qmp)?;

    let console = guest.console.as_mut().context("no console input")?;
    console.write_all(DRAW_WORKLOAD)?;
    console.flush()?;
    std::thread::sleep(WORKLOAD_WARMUP);
    let load = time_status(&mut qmp)?;
    if let Some(status) = guest.child.try_wait()? {
        bail!(
            "exited ({status}) under load; output ends with:\n{}",
            guest.output_tail()
        );
    }

    let ports = match monitor {
        Monitor::Vmm => qxl_ports(&qmp.call(r#"{"execute":"query-qxl"}"#)?),
        Monitor::Qemu => Vec::new(),
    };
    Ok(ApiFigures { idle, load, ports })
}

/// Times `API_REQUESTS` requests of `query-status`: (p50, p99) in ms. Fails when they take
/// longer than `API_PHASE_LIMIT` in all.
fn time_status(qmp: &mut Qmp) -> Result<(f64, f64)> {
    let start = Instant::now();
    let mut ns = Vec::with_capacity(API_REQUESTS);
    while ns.len() < API_REQUESTS {
        ns.push(qmp.time_query_status()?);
        if start.elapsed() > API_PHASE_LIMIT {
            bail!(
                "only {} query-status replies in {API_PHASE_LIMIT:?}",
                ns.len()
            );
        }
    }
    let ms = |pct| percentile(&ns, pct) as f64 / 1e6;
    Ok((ms(50), ms(99)))
}

fn qxl_ports(reply: &serde_json::Value) -> Vec<(String, f64, f64)> {
    let ports = reply.get("ports").and_then(|p| p.as_array());
    let us = |port: &serde_json::Value, key| {
        port.get(key).and_then(|v| v.as_u64()).unwrap_or(0) as f64 / 1e3
    };
    ports
        .into_iter()
        .flatten()
        .map(|port| {
            let name = port.get("name").and_then(|n| n.as_str()).unwrap_or("?");
            (name.to_string(), us(port, "p50-ns"), us(port, "p99-ns"))
        })
        .collect()
}

struct Run {
    monitor: Monitor,
    round: usize,
    result: Result<Sample>,
}

/// Runs both monitors `rounds` times, alternating, and reports each run on stderr.
fn run_all(setup: &Setup, rounds: usize) -> Vec<Run> {
    let mut runs = Vec::new();
    for round in 1..=rounds {
        for monitor in [Monitor::Vmm, Monitor::Qemu] {
            let name = monitor.name();
            eprintln!("bench-boot: run {round}/{rounds} {name}: booting");
            let result = measure(setup, monitor);
            match &result {
                Ok(s) => eprintln!(
                    "bench-boot: run {round}/{rounds} {name}: boot {:.2} s, VMM RSS {:.2} MiB, \
                     total RSS {:.2} MiB (guest RAM {:.2} MiB resident, {} mapping(s))",
                    s.boot_s, s.own_mib, s.total_mib, s.guest_ram_mib, s.guest_ram_mappings
                ),
                Err(e) => eprintln!("bench-boot: run {round}/{rounds} {name}: FAILED: {e:#}"),
            }
            runs.push(Run {
                monitor,
                round,
                result,
            });
        }
    }
    runs
}

type Figure = fn(&Sample) -> f64;

const FIGURES: [(&str, Figure); 7] = [
    ("boot time (s)", |s| s.boot_s),
    ("VMM RSS (MiB)", |s| s.own_mib),
    ("total RSS (MiB)", |s| s.total_mib),
    ("status idle p50 ms", |s| s.api.idle.0),
    ("status idle p99 ms", |s| s.api.idle.1),
    ("status load p50 ms", |s| s.api.load.0),
    ("status load p99 ms", |s| s.api.load.1),
];

/// The summary of one figure over one monitor's successful runs.
fn figure(runs: &[Run], monitor: Monitor, figure: Figure) -> Option<[f64; 3]> {
    let values: Vec<f64> = runs
        .iter()
        .filter(|r| r.monitor == monitor)
        .filter_map(|r| r.result.as_ref().ok().map(figure))
        .collect();
    summary(&values)
}

fn print_table(runs: &[Run], rounds: usize) {
    println!();
    println!(
        "{:<25}{:>7}{:>10}{:>10}{:>10}",
        "", "ok", "min", "median", "max"
    );
    for monitor in [Monitor::Vmm, Monitor::Qemu] {
        let ok = runs
            .iter()
            .filter(|r| r.monitor == monitor && r.result.is_ok())
            .count();
        for (label, get) in FIGURES {
            let row = format!(
                "{:<5} {label:<19}{:>7}",
                monitor.name(),
                format!("{ok}/{rounds}")
            );
            match figure(runs, monitor, get) {
                Some([min, median, max]) => {
                    println!("{row}{min:>10.2}{median:>10.2}{max:>10.2}")
                }
                None => println!("{row}{:>10}{:>10}{:>10}", "-", "-", "-"),
            }
        }
    }
}

/// Prints the qemu/vmm ratios of the medians and whether the targets are met.
fn print_verdict(runs: &[Run]) {
    let median = |monitor, get| figure(runs, monitor, get).map(|[_, median, _]| median);
    let ratio = |get| Some(median(Monitor::Qemu, get)? / median(Monitor::Vmm, get)?);
    let boot_ratio = ratio(FIGURES[0].1);
    let own_ratio = ratio(FIGURES[1].1);
    let show = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}x"));
    println!();
    println!("ratio qemu/vmm, boot time median: {}", show(boot_ratio));
    println!("ratio qemu/vmm, VMM RSS median:   {}", show(own_ratio));
    let verdict = |met: Option<bool>| match met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    };
    println!(
        "target: boot at least {BOOT_SPEEDUP_TARGET}x faster than QEMU (median ratio): {} ({})",
        verdict(boot_ratio.map(|r| r >= BOOT_SPEEDUP_TARGET)),
        show(boot_ratio)
    );
    let own = median(Monitor::Vmm, FIGURES[1].1);
    println!(
        "target: vmm's own memory under {OWN_MEMORY_TARGET_MIB} MiB (median VMM RSS): {} ({})",
        verdict(own.map(|m| m < OWN_MEMORY_TARGET_MIB)),
        own.map_or("-".to_string(), |m| format!("{m:.2} MiB"))
    );

    let load = median(Monitor::Vmm, FIGURES[6].1);
    let idle = median(Monitor::Vmm, FIGURES[4].1);
    let qemu_load = median(Monitor::Qemu, FIGURES[6].1);
    let load_ratio = load.zip(idle).map(|(l, i)| l / i);
    println!(
        "target: vmm query-status p99 drawing within {API_LOAD_TARGET}x of idle (medians): {} ({})",
        verdict(load_ratio.map(|r| r <= API_LOAD_TARGET)),
        show(load_ratio)
    );
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} ms"));
    println!(
        "target: vmm query-status p99 drawing below QEMU's (medians): {} ({} against {})",
        verdict(load.zip(qemu_load).map(|(v, q)| v < q)),
        ms(load),
        ms(qemu_load)
    );
}

/// The vmm's QXL ports under the drawing load: median over runs of p50 and p99, exit to
/// re-entry, as `query-qxl` reports them (upper bounds of log2 buckets).
fn print_ports(runs: &[Run]) {
    let samples: Vec<&Sample> = runs
        .iter()
        .filter(|r| r.monitor == Monitor::Vmm)
        .filter_map(|r| r.result.as_ref().ok())
        .collect();
    let mut names: Vec<&str> = samples
        .iter()
        .flat_map(|s| s.api.ports.iter().map(|p| p.0.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        return;
    }
    println!("\nvmm QXL ports, vCPU exit to re-entry (us, median over runs; log2 bucket bounds):");
    for name in names {
        let pick = |f: fn(&(String, f64, f64)) -> f64| -> Vec<f64> {
            let of_run = |s: &&Sample| s.api.ports.iter().find(|p| p.0 == name).map(f);
            samples.iter().filter_map(of_run).collect()
        };
        let mid = |v: Vec<f64>| summary(&v).map_or(0.0, |[_, m, _]| m);
        println!(
            "  {name:<24} p50 {:>8.1}  p99 {:>8.1}",
            mid(pick(|p| p.1)),
            mid(pick(|p| p.2))
        );
    }
}

/// Where this runs: the test host, or directly on a /dev/kvm that can boot Linux.
fn place() -> Result<&'static str> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    // resources/test-host.sh names the run's control folder on the test host's command line.
    if cmdline.split_whitespace().any(|w| w.starts_with("th.ctl=")) {
        return Ok("in the test host (nested KVM under QEMU TCG with emulated SVM)");
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hardware = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if Path::new("/dev/kvm").exists() && hardware && !Path::new("/sys/module/kvm_pvm").exists() {
        return Ok("directly on this machine's /dev/kvm");
    }
    bail!(
        "this /dev/kvm cannot boot Linux (no VMX/SVM, or the PVM backend): run \
         tests/bench-boot.sh, which runs the benchmark in the nested-KVM test host"
    )
}

fn qemu_version() -> String {
    Command::new(QEMU)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(String::from)
        })
        .unwrap_or_else(|| format!("{QEMU} not found"))
}

fn parse_rounds() -> Result<usize> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(DEFAULT_RUNS),
        [runs] => match runs.parse() {
            Ok(n @ 1..) => Ok(n),
            _ => bail!("usage: bench-boot [RUNS]  (RUNS: runs of each VMM, at least 1)"),
        },
        _ => bail!("usage: bench-boot [RUNS]"),
    }
}

fn print_header(rounds: usize, place: &str, setup: &Setup) {
    println!("bench-boot: {rounds} runs each of vmm and qemu, alternating, {place}");
    println!("vmm:   {}", setup.vmm.display());
    println!("qemu:  {} (-accel kvm -cpu host)", qemu_version());
    println!(
        "guest: {} + {}, {GUEST_MIB} MiB, 1 vCPU, command line \"{TEST_CMDLINE}\"",
        setup.kernel.display(),
        setup.initramfs.display()
    );
    println!(
        "boot time: spawn to VMM-GUEST-READY on the serial console; RSS: {} s after it \
         (VMM RSS = total minus guest RAM); deadline {} s a boot; then {API_REQUESTS} \
         query-status idle and {API_REQUESTS} while the guest writes text to /dev/tty0",
        SETTLE.as_secs(),
        DEADLINE.as_secs()
    );
}

/// Lists the failed runs, if any; returns whether there were some.
fn report_failures(runs: &[Run]) -> bool {
    let failed: Vec<&Run> = runs.iter().filter(|r| r.result.is_err()).collect();
    if failed.is_empty() {
        return false;
    }
    let (n, total) = (failed.len(), runs.len());
    println!("\n{n} of {total} runs FAILED (left out of the table):");
    for run in failed {
        if let Err(e) = &run.result {
            let why = format!("{e:#}");
            let first = why.lines().next().unwrap_or_default();
            println!("  run {} {}: {first}", run.round, run.monitor.name());
        }
    }
    true
}

fn main() {
    let start = parse_rounds().and_then(|rounds| Ok((rounds, place()?, Setup::find()?)));
    let (rounds, place, setup) = start.unwrap_or_else(|e| {
        eprintln!("bench-boot: {e:#}");
        std::process::exit(2);
    });
    print_header(rounds, place, &setup);
    let runs = run_all(&setup, rounds);
    print_table(&runs, rounds);
    print_ports(&runs);
    print_verdict(&runs);
    if report_failures(&runs) {
        std::process::exit(1);
    }
}
