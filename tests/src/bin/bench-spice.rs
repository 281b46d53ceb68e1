// SPDX-License-Identifier: Apache-2.0
//! Benchmarks the vmm's SPICE display path directly on this machine's /dev/kvm: the project's
//! small guest (`tests/guest/qxlbench.c`) draws 16x16 tiles, one at a time, each followed by
//! UPDATE_AREA_ASYNC and its interrupt, and the project's Rust SPICE client
//! (`tests/src/spice_client.rs`) receives them on loopback.
//!
//! Usage: `bench-spice [RUNS]` (default 5); `tests/bench-spice.sh` builds what it needs. The
//! vmm is `$VMM_BIN` (default `target/release/vmm`).
//!
//! Each run starts the vmm with `--spice` on a free 127.0.0.1 port and the guest in marker
//! mode (`qb.markers` on its command line; see the guest's header). Once the guest's load
//! phase draws, the run measures windows of [`WINDOW`]:
//! 1. no client: the guest's drawing rate (drawables/s from `query-qxl`);
//! 2. a client asking for LZ4 images, [`WARM_UP`] after it linked (its first full screen):
//!    the drawing rate, and the display messages and bytes the client received;
//! 3. the same with a client asking for raw bitmaps (`ImageCompression::Off`);
//! 4. no client again; "no client" is the mean of windows 1 and 4.
//!
//! Latency: one draw in [`MARKER_EVERY`] copies a tile whose first pixels carry the guest's
//! TSC, read just before the draw goes on the command ring. The client logs the host's TSC
//! when each DRAW_COPY message is applied, with the image's first pixels. The guest's TSC is
//! turned into the host's with an offset taken once per run: the guest prints calibration
//! lines, each with the TSC read just before the previous line's newline, and this program
//! takes the host's TSC when it reads each line. The smallest host-minus-guest difference is
//! the offset. It still holds the fixed part of the serial path's delay (an exit for the
//! newline, the vmm's console thread, a pipe, this program's reader), so latencies read low
//! by that much; it is not measured (roughly 0.1 ms is expected). How much later than the
//! least delayed line the others were read shows the path's variable part, and the drift of
//! the offset from before the load phase to after it shows whether the clocks keep step.
//!
//! A marker is seen only when its tile arrives as an image of its own, as the vmm sends each
//! draw; a marker folded into a larger refresh image (a client that fell behind) is missed,
//! which the "markers received / drawn" ratio shows.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vmm_tests::qmp::Qmp;
use vmm_tests::spice_client::display::DrawRecord;
use vmm_tests::spice_client::image;
use vmm_tests::spice_client::{ImageCompression, Options, SpiceClient, Stats};
use vmm_tests::stats::{percentile, summary};
use vmm_tests::tsc;

const DEFAULT_RUNS: usize = 5;
/// How long each measured window lasts.
const WINDOW: Duration = Duration::from_secs(3);
/// How long a new client gets for its first full screen before a window starts.
const WARM_UP: Duration = Duration::from_secs(1);
/// A whole vmm run is killed at this age.
const DEADLINE: Duration = Duration::from_secs(300);
/// As in the guest: one load draw in this many is a marker tile.
const MARKER_EVERY: u64 = 32;
/// As in the guest: the first pixel of a marker tile (24 bits).
const MARKER_TAG: u32 = 0x3c_5aa5;
/// Draw records the client keeps per window.
const LOG_CAPACITY: usize = 100_000;
/// SPICE's mini header in front of each message body: u16 type, u32 size.
const MINI_HEADER: f64 = 6.0;

/// A console line and the host's TSC when this program read it.
struct Line {
    text: String,
    tsc: u64,
}

/// Host-minus-guest TSC differences from one set of calibration lines.
struct Calibration {
    differences: Vec<i64>,
}

impl Calibration {
    /// Pairs each `QB-CAL` line of `lines` with the guest TSC the next line reports for it;
    /// `last` starts the line that closes the set (`<last> tsc=N`).
    fn from_lines(lines: &[Line], last: &str) -> Result<Self> {
        let set: Vec<(u64, u64)> = lines
            .iter()
            .filter_map(|l| Some((l.tsc, calibration_value(&l.text, last)?)))
            .collect();
        let differences: Vec<i64> = set
            .windows(2)
            .filter_map(|pair| i64::try_from(i128::from(pair[0].0) - i128::from(pair[1].1)).ok())
            .collect();
        if differences.len() < 2 {
            bail!("too few calibration lines before {last}");
        }
        Ok(Calibration { differences })
    }

    /// Host TSC minus guest TSC: the smallest difference, the one least delayed.
    fn offset(&self) -> i64 {
        self.differences.iter().copied().min().unwrap_or(0)
    }

    /// How much more than the least delayed line the median and the most delayed lines took
    /// to be read, in cycles.
    fn spread(&self) -> [i64; 2] {
        let max = self.differences.iter().copied().max().unwrap_or(0);
        let median = percentile(&self.differences, 50);
        [median - self.offset(), max - self.offset()]
    }
}

/// The guest TSC a calibration line reports: `QB-CAL N`, or `<last> tsc=N`.
fn calibration_value(text: &str, last: &str) -> Option<u64> {
    let value = match text.strip_prefix("QB-CAL ") {
        Some(value) => value,
        None => text.strip_prefix(last)?.strip_prefix(" tsc=")?,
    };
    value.trim().parse().ok()
}

/// What one client window measured.
#[derive(Default)]
struct ClientWindow {
    /// The guest's drawables per second.
    draw_rate: f64,
    /// Display messages per second the client received.
    update_rate: f64,
    /// Bytes on the wire per display message (body plus mini header).
    bytes_per_update: f64,
    /// The share of images that came as LZ4 (the server sends raw bitmaps when LZ4 would not
    /// be smaller).
    lz4_share: f64,
    /// Draw-to-receipt latencies of marker tiles, in microseconds: p50, p99, max.
    latency: Option<[f64; 3]>,
    /// Latencies below zero (a calibration off by more than the latency).
    negative: usize,
    /// Marker tiles received, and those the guest drew in the window.
    markers: (usize, f64),
    /// Draw records the client's log had no room for.
    dropped: u64,
}

/// One run's figures.
struct Run {
    idle_rate: f64,
    lz4: ClientWindow,
    raw: ClientWindow,
    /// Calibration spread (median and max) before and after the load phase, in microseconds
    /// (the larger of the two sets).
    spread_us: [f64; 2],
    /// Offset after the load phase minus offset before it, in microseconds.
    drift_us: f64,
}

impl Run {
    /// The LZ4 window, then the raw one.
    fn windows(&self) -> [&ClientWindow; 2] {
        [&self.lz4, &self.raw]
    }
}

fn main() -> Result<()> {
    let (runs, guest, vmm) = vmm_tests::bench_setup("bench-spice", DEFAULT_RUNS)?;
    let mhz = tsc::mhz();
    println!(
        "bench-spice: {runs} runs, TSC {mhz:.0} MHz, windows of {WINDOW:?}, a marker tile \
         every {MARKER_EVERY} draws, guest {}",
        guest.display()
    );

    let mut results = Vec::new();
    for n in 1..=runs {
        let run = run_once(&vmm, &guest, mhz).with_context(|| format!("run {n}"))?;
        println!(
            "run {n}/{runs}: {:.0} draws/s without a client, {:.0} updates/s to the LZ4 client",
            run.idle_rate, run.lz4.update_rate
        );
        results.push(run);
    }
    report(&results);
    Ok(())
}

/// The vmm and its console, read line by line and stamped with the host's TSC on a thread.
struct VmmProcess {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<Line>,
    started: Instant,
    tail: Vec<String>,
}

impl VmmProcess {
    fn spawn(vmm: &Path, guest: &Path, socket: &Path, port: u16) -> Result<Self> {
        let mut child = Command::new(vmm)
            .arg("--kernel")
            .arg(guest)
            .args(["--cmdline", "qb.markers", "--memory", "size=256M"])
            .arg("--spice")
            .arg(format!("port={port},disable-ticketing=on"))
            .arg("--api-socket")
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
            for text in BufReader::new(stdout).lines().map_while(Result::ok) {
                let line = Line {
                    tsc: tsc::now(),
                    text,
                };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(VmmProcess {
            child,
            stdin,
            lines,
            started: Instant::now(),
            tail: Vec::new(),
        })
    }

    /// Reads console lines up to the first that starts with `marker`; returns them all.
    fn expect(&mut self, marker: &str) -> Result<Vec<Line>> {
        let mut read = Vec::new();
        loop {
            let left = DEADLINE.saturating_sub(self.started.elapsed());
            let line = self.lines.recv_timeout(left).with_context(|| {
                format!(
                    "no {marker} from the guest; console: {}",
                    self.tail.join(" | ")
                )
            })?;
            if self.tail.len() == 5 {
                self.tail.remove(0);
            }
            self.tail.push(line.text.clone());
            if line.text.starts_with("QB-ERROR") {
                bail!("the guest failed: {}", line.text);
            }
            let done = line.text.starts_with(marker);
            read.push(line);
            if done {
                return Ok(read);
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

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn run_once(vmm: &Path, guest: &Path, mhz: f64) -> Result<Run> {
    let dir = std::env::temp_dir().join(format!("bench-spice-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("api.sock");
    let _ = std::fs::remove_file(&socket);
    let port = free_port()?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut process = VmmProcess::spawn(vmm, guest, &socket, port)?;

    let start = process.expect("QB-LOAD-START")?;
    let before = Calibration::from_lines(&start, "QB-LOAD-START")?;
    let mut api = Qmp::connect(&socket, Duration::from_secs(10), Duration::from_secs(10))?;

    let idle_before = draw_rate(&mut api)?;
    let lz4 = client_window(addr, &mut api, ImageCompression::Lz4, &before, mhz)?;
    let raw = client_window(addr, &mut api, ImageCompression::Off, &before, mhz)?;
    std::thread::sleep(Duration::from_millis(500));
    let idle_after = draw_rate(&mut api)?;

    process.stdin.write_all(b"x")?;
    let end = process.expect("QB-CAL-END")?;
    let after = Calibration::from_lines(&end, "QB-CAL-END")?;
    process.expect("QB-DONE")?;
    let _ = api.call(r#"{"execute":"quit"}"#);

    let [b, a] = [before.spread(), after.spread()];
    let spread = [b[0].max(a[0]), b[1].max(a[1])];
    Ok(Run {
        idle_rate: (idle_before + idle_after) / 2.0,
        lz4,
        raw,
        spread_us: spread.map(|c| c as f64 / mhz),
        drift_us: (after.offset() - before.offset()) as f64 / mhz,
    })
}

/// Drawables the device rendered so far.
fn drawables(api: &mut Qmp) -> Result<u64> {
    let reply = api.call(r#"{"execute":"query-qxl"}"#)?;
    reply["engine"]["drawables"]
        .as_u64()
        .context("query-qxl without engine.drawables")
}

/// The guest's drawables per second over one window.
fn draw_rate(api: &mut Qmp) -> Result<f64> {
    let (before, start) = (drawables(api)?, Instant::now());
    std::thread::sleep(WINDOW);
    let after = drawables(api)?;
    Ok((after - before) as f64 / start.elapsed().as_secs_f64())
}

/// Connects a client asking for `compression`, lets it take the first full screen, and
/// measures one window with it.
fn client_window(
    addr: SocketAddr,
    api: &mut Qmp,
    compression: ImageCompression,
    calibration: &Calibration,
    mhz: f64,
) -> Result<ClientWindow> {
    let options = Options {
        password: None,
        timeout: Duration::from_secs(30),
        compression: Some(compression),
    };
    let client = SpiceClient::connect_with(addr, &options)?;
    client.log_draws(LOG_CAPACITY);
    client.wait_until("the first update", Duration::from_secs(30), |s| {
        s.display_messages > 0
    })?;
    std::thread::sleep(WARM_UP);

    let _ = client.take_draw_log();
    let start = Snapshot::take(&client, api)?;
    std::thread::sleep(WINDOW);
    let (records, dropped) = client.take_draw_log();
    let end = Snapshot::take(&client, api)?;
    if let Some(failure) = client.failure() {
        bail!("the {compression:?} client failed: {failure}");
    }

    let mut window = end.since(&start);
    let latencies = marker_latencies(&records, calibration.offset());
    window.latency = latency_figures(&latencies, mhz);
    window.negative = latencies.iter().filter(|&&l| l < 0).count();
    window.markers.0 = latencies.len();
    window.dropped = dropped;
    Ok(window)
}

/// The client's counters and the guest's drawables at one moment.
struct Snapshot {
    stats: Stats,
    drawn: u64,
    at: Instant,
}

impl Snapshot {
    fn take(client: &SpiceClient, api: &mut Qmp) -> Result<Self> {
        let stats = client.stats();
        Ok(Snapshot {
            stats,
            drawn: drawables(api)?,
            at: Instant::now(),
        })
    }

    /// Rates and sizes from `start` to this snapshot (no latencies).
    fn since(&self, start: &Snapshot) -> ClientWindow {
        let secs = self.at.duration_since(start.at).as_secs_f64();
        let (now, then) = (&self.stats, &start.stats);
        let messages = now.display_messages - then.display_messages;
        let bytes = now.display_bytes - then.display_bytes;
        let draws = self.drawn - start.drawn;
        let lz4 = images(now, Some(image::kind::LZ4)) - images(then, Some(image::kind::LZ4));
        let all = images(now, None) - images(then, None);
        ClientWindow {
            draw_rate: draws as f64 / secs,
            update_rate: messages as f64 / secs,
            bytes_per_update: bytes as f64 / messages.max(1) as f64 + MINI_HEADER,
            lz4_share: lz4 as f64 / all.max(1) as f64,
            markers: (0, draws as f64 / MARKER_EVERY as f64),
            ..ClientWindow::default()
        }
    }
}

/// Images the client drew, of SPICE_IMAGE_TYPE_* `kind` or of any kind.
fn images(stats: &Stats, kind: Option<u8>) -> u64 {
    stats
        .image_kinds
        .iter()
        .filter(|(k, _)| kind.is_none_or(|kind| **k == kind))
        .map(|(_, n)| n)
        .sum()
}

/// The guest TSC a marker tile carries, if `record` is one.
fn marker_tsc(record: &DrawRecord) -> Option<u64> {
    let [tag, low, middle, high] = record.pixels.map(|p| u64::from(p & 0x00ff_ffff));
    (tag == u64::from(MARKER_TAG)).then_some(low | middle << 24 | high << 48)
}

/// Host cycles from each marker's draw to its receipt; a marker seen twice (resent in a
/// refresh) counts once, at its first receipt.
fn marker_latencies(records: &[DrawRecord], offset: i64) -> Vec<i64> {
    let mut seen = HashSet::new();
    records
        .iter()
        .filter_map(|r| Some((r, marker_tsc(r)?)))
        .filter(|(_, guest)| seen.insert(*guest))
        .filter_map(|(r, guest)| {
            let drawn = i128::from(guest) + i128::from(offset);
            i64::try_from(i128::from(r.received_tsc) - drawn).ok()
        })
        .collect()
}

/// p50, p99 and max of `cycles`, in microseconds.
fn latency_figures(cycles: &[i64], mhz: f64) -> Option<[f64; 3]> {
    let max = *cycles.iter().max()?;
    Some([percentile(cycles, 50), percentile(cycles, 99), max].map(|c| c as f64 / mhz))
}

/// min / median / max of `values`, with `digits` decimals.
fn spread(values: &[f64], digits: usize) -> String {
    match summary(values) {
        Some([lo, mid, hi]) => format!("{lo:.digits$} / {mid:.digits$} / {hi:.digits$}"),
        None => "-".into(),
    }
}

fn row(label: &str, runs: &[Run], digits: usize, figure: impl Fn(&Run) -> f64) {
    let values: Vec<f64> = runs.iter().map(figure).collect();
    println!("  {label:<44} {:>30}", spread(&values, digits));
}

fn report(runs: &[Run]) {
    println!("\nmin / median / max over the runs:");
    println!("guest drawing and the client's display updates (messages), per second:");
    row("guest draws/s, no client", runs, 0, |r| r.idle_rate);
    row("guest draws/s, LZ4 client", runs, 0, |r| r.lz4.draw_rate);
    row("guest draws/s, raw-bitmap client", runs, 0, |r| {
        r.raw.draw_rate
    });
    row("updates/s received, LZ4 client", runs, 0, |r| {
        r.lz4.update_rate
    });
    row("updates/s received, raw-bitmap client", runs, 0, |r| {
        r.raw.update_rate
    });
    row("drawing rate, LZ4 client / no client", runs, 3, |r| {
        r.lz4.draw_rate / r.idle_rate
    });
    row("drawing rate, raw client / no client", runs, 3, |r| {
        r.raw.draw_rate / r.idle_rate
    });
    println!("  (the client is this program, on the same cores: the ratio includes its own work)");

    println!("bytes on the wire per display message (body and 6-byte mini header):");
    row("LZ4", runs, 1, |r| r.lz4.bytes_per_update);
    row("raw bitmaps", runs, 1, |r| r.raw.bytes_per_update);
    row("share of images sent as LZ4, LZ4 client", runs, 3, |r| {
        r.lz4.lz4_share
    });
    println!("  (the server sends a raw bitmap whenever LZ4 would not be smaller)");

    report_latency(runs);
}

fn report_latency(runs: &[Run]) {
    println!("guest draw to client receipt, marker tiles (us):");
    println!("  {:<12} {:>24} {:>24} {:>24}", "", "p50", "p99", "max");
    for (i, name) in ["LZ4", "raw bitmaps"].into_iter().enumerate() {
        let figures: Vec<[f64; 3]> = runs.iter().filter_map(|r| r.windows()[i].latency).collect();
        let column = |c: usize| spread(&figures.iter().map(|f| f[c]).collect::<Vec<_>>(), 1);
        println!(
            "  {name:<12} {:>24} {:>24} {:>24}",
            column(0),
            column(1),
            column(2)
        );
    }
    row("markers received / drawn, LZ4", runs, 3, |r| {
        r.lz4.markers.0 as f64 / r.lz4.markers.1
    });
    row("markers received / drawn, raw", runs, 3, |r| {
        r.raw.markers.0 as f64 / r.raw.markers.1
    });
    let negative: usize = runs.iter().map(|r| r.lz4.negative + r.raw.negative).sum();
    let dropped: u64 = runs.iter().map(|r| r.lz4.dropped + r.raw.dropped).sum();
    println!("  negative latencies: {negative}; draw records dropped (log full): {dropped}");

    println!("clock calibration (guest TSC to host TSC, once per run, over the serial console):");
    row(
        "line delay over the least delayed, median (us)",
        runs,
        1,
        |r| r.spread_us[0],
    );
    row(
        "line delay over the least delayed, max (us)",
        runs,
        1,
        |r| r.spread_us[1],
    );
    row("offset drift over the run (us)", runs, 1, |r| r.drift_us);
    println!(
        "  the offset still holds the serial path's fixed delay (not measured, ~0.1 ms \
         expected): latencies read low by that much"
    );
}
