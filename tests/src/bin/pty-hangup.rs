// SPDX-License-Identifier: Apache-2.0
//! Runs a command on a new pseudo-terminal (as its controlling terminal, stdin and stdout),
//! reads the terminal until a marker appears, then closes the terminal's master side as a
//! closed terminal window would, and measures what the command does afterwards.
//!
//! Usage: pty-hangup MARKER WATCH_SECONDS -- CMD [ARGS...]
//!
//! Prints one line: `pty-hangup: seen=BYTES exit=CODE idle_cpu_ms=MS window_ms=MS`, where
//! idle_cpu_ms is the CPU time used during the watch window by the command's threads other
//! than its vCPU threads (named `vcpu*`). stderr is inherited.

use std::ffi::CStr;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

fn open_pty() -> Result<(OwnedFd, String)> {
    // SAFETY: plain libc calls on a descriptor we own; ptsname_r writes into our buffer.
    unsafe {
        // Close-on-exec, or the command itself would keep the terminal from hanging up.
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if master < 0 || libc::grantpt(master) != 0 || libc::unlockpt(master) != 0 {
            bail!("cannot open a pty: {}", std::io::Error::last_os_error());
        }
        let mut name = [0 as libc::c_char; 128];
        if libc::ptsname_r(master, name.as_mut_ptr(), name.len()) != 0 {
            bail!("ptsname: {}", std::io::Error::last_os_error());
        }
        let name = CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned();
        Ok((OwnedFd::from_raw_fd(master), name))
    }
}

/// CPU time (ms) of each thread of `pid` whose name does not start with "vcpu", by name.
fn non_vcpu_cpu_ms(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let ticks_per_s = 100; // USER_HZ on Linux
    let mut times = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return times;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        if name.starts_with("vcpu") {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
        let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
        *times.entry(name.to_string()).or_default() += (utime + stime) * 1000 / ticks_per_s;
    }
    times
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, marker, watch, dashes, cmd @ ..] = args.as_slice() else {
        bail!("usage: pty-hangup MARKER WATCH_SECONDS -- CMD [ARGS...]");
    };
    if dashes != "--" || cmd.is_empty() {
        bail!("usage: pty-hangup MARKER WATCH_SECONDS -- CMD [ARGS...]");
    }
    let watch = Duration::from_secs(watch.parse().context("WATCH_SECONDS")?);

    let (master, slave_name) = open_pty()?;
    let slave = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&slave_name)?;
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    let slave_fd = slave.as_raw_fd();
    let mut command = Command::new(&cmd[0]);
    command
        .args(&cmd[1..])
        .stdin(slave.try_clone()?)
        .stdout(slave.try_clone()?);
    command.stderr(Stdio::inherit());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(slave_fd, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().context("spawn the command")?;
    drop(slave);

    let mut reader = std::fs::File::from(master);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(600);
    while !String::from_utf8_lossy(&seen).contains(marker.as_str()) {
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            bail!(
                "no {marker:?} on the terminal; got:\n{}",
                String::from_utf8_lossy(&seen)
            );
        }
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => std::thread::sleep(Duration::from_millis(50)),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }

    // Hang up: close the master while the guest is still writing.
    drop(reader);
    let start_cpu = non_vcpu_cpu_ms(child.id());
    let start = Instant::now();
    std::thread::sleep(watch);
    let end_cpu = non_vcpu_cpu_ms(child.id());
    // Threads that ended during the window (the console writer, after the hang-up) are left
    // out: their time before the window is not part of it.
    let deltas: Vec<(&String, u64)> = end_cpu
        .iter()
        .map(|(name, ms)| {
            (
                name,
                ms.saturating_sub(start_cpu.get(name).copied().unwrap_or(0)),
            )
        })
        .collect();
    let per_thread: Vec<String> = deltas
        .iter()
        .map(|(name, ms)| format!("{name}:{ms}"))
        .collect();
    let idle_cpu_ms: u64 = deltas.iter().map(|(_, ms)| ms).sum();
    let window_ms = start.elapsed().as_millis();

    let exit_deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > exit_deadline {
            let _ = child.kill();
            bail!("the command did not exit after the hang-up");
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    println!(
        "pty-hangup: seen={} exit={} idle_cpu_ms={idle_cpu_ms} window_ms={window_ms} threads={}",
        seen.len(),
        status.code().unwrap_or(-1),
        per_thread.join(",")
    );
    Ok(())
}
