// SPDX-License-Identifier: Apache-2.0
//! Helpers for tests that boot real Linux guests under the vmm.
//!
//! Where a guest runs is decided by probing the machine: directly when /dev/kvm is backed by
//! hardware virtualization (VMX or SVM), otherwise inside the nested-KVM test host
//! (`resources/test-host.sh`). Every run has a deadline after which the whole process group is
//! killed, so a hung guest fails its test instead of hanging the suite.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub mod qmp;
pub mod qxlbench;
pub mod spice_client;
pub mod stats;
pub mod tsc;

/// The command line tests boot with: quiet, so that the console is not slowed down by
/// hundreds of kernel messages (each byte is a port exit).
pub const TEST_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 quiet";

/// Where boot tests run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// On this machine's /dev/kvm.
    Direct,
    /// Inside the nested-KVM test host.
    TestHost,
}

/// The repository's top folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The vmm binary under test: $VMM_BIN, or the debug build.
pub fn vmm_binary() -> PathBuf {
    let path = std::env::var_os("VMM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug/vmm"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p vmm` first",
        path.display()
    );
    path
}

/// A file of the test guest in target/guest/, built on first use by resources/build-guest.sh.
pub fn guest_file(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let status = Command::new(repo_root().join("resources/build-guest.sh"))
            .stdout(Stdio::null())
            .status()
            .expect("run resources/build-guest.sh");
        assert!(status.success(), "resources/build-guest.sh failed");
    });
    repo_root().join("target/guest").join(name)
}

fn cpu_has_hardware_virtualization() -> bool {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// Decides where guests boot, or why they cannot; prints the choice once.
pub fn boot_place() -> std::result::Result<Place, String> {
    static PRINT: Once = Once::new();
    let pvm = Path::new("/sys/module/kvm_pvm").exists();
    let place = if Path::new("/dev/kvm").exists() && cpu_has_hardware_virtualization() && !pvm {
        Ok(Place::Direct)
    } else if repo_root().join("resources/test-host.sh").exists() && is_root() {
        Ok(Place::TestHost)
    } else {
        Err("no /dev/kvm with VMX/SVM here, and the test host needs root to install QEMU".into())
    };

    PRINT.call_once(|| match &place {
        Ok(Place::Direct) => eprintln!("boot tests: running guests directly on /dev/kvm"),
        Ok(Place::TestHost) => eprintln!(
            "boot tests: running guests in the nested-KVM test host (this /dev/kvm {})",
            if pvm {
                "is the PVM backend, which cannot boot Linux"
            } else {
                "lacks VMX/SVM"
            }
        ),
        Err(why) => eprintln!("boot tests: cannot boot guests: {why}"),
    });
    place
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Returns the place to boot in, or None when the test should be skipped (never in CI).
pub fn require_boot_place(test: &str) -> Option<Place> {
    match boot_place() {
        Ok(place) => Some(place),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: cannot boot a guest in CI: {why}")
        }
        Err(why) => {
            eprintln!("{test}: skipped: {why}");
            None
        }
    }
}

/// Whether a test whose guest needs no Linux (any /dev/kvm runs it) can run here: false, with
/// a line saying why, when /dev/kvm cannot be opened; that fails the test in CI.
pub fn require_kvm(test: &str) -> bool {
    let why = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => return true,
        Err(e) => format!("cannot open /dev/kvm: {e}"),
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {why}");
    }
    eprintln!("{test}: skipped: {why}");
    false
}

/// Builds the command that runs `program args` in `place` with a deadline of `timeout`.
pub fn command_in(place: Place, program: &Path, args: &[String], timeout: Duration) -> Command {
    let mut cmd = match place {
        Place::Direct => Command::new(program),
        Place::TestHost => {
            let mut cmd = Command::new(repo_root().join("resources/test-host.sh"));
            cmd.arg(program)
                .env("TEST_HOST_TIMEOUT", timeout.as_secs().to_string());
            cmd
        }
    };
    cmd.args(args).current_dir(repo_root());
    cmd
}

/// Standard vmm arguments for the test guest with `cmdline`. The kernel is the uncompressed
/// ELF vmlinux: unpacking the bzImage takes the guest about 10 s in the test host, at every
/// boot. tests/boot.rs boots the bzImage itself.
pub fn guest_args(cpus: u8, cmdline: &str) -> Vec<String> {
    let kernel = guest_file("vmlinux");
    let initramfs = guest_file("initramfs.cpio.gz");
    vec![
        "--kernel".into(),
        kernel.display().to_string(),
        "--initramfs".into(),
        initramfs.display().to_string(),
        "--cpus".into(),
        cpus.to_string(),
        "--memory".into(),
        "512M".into(),
        "--cmdline".into(),
        cmdline.into(),
    ]
}

/// A command line that runs `script` in the guest and then powers off.
pub fn run_cmdline(script: &str) -> String {
    assert!(
        !script.contains('"'),
        "the guest command cannot contain double quotes"
    );
    format!("{TEST_CMDLINE} vmm.run=\"{script}\"")
}

/// A running process whose output (stdout and stderr merged) is collected as it arrives.
pub struct Session {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    deadline: Instant,
}

impl Session {
    /// Starts `cmd` in its own process group with piped stdin; it is killed at `timeout`.
    pub fn spawn(mut cmd: Command, timeout: Duration) -> Result<Session> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.process_group(0);
        let mut child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;

        let output = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let stdout = child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>);
        let stderr = child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>);
        for mut stream in [stdout, stderr].into_iter().flatten() {
            let output = output.clone();
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    output.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }));
        }
        Ok(Session {
            child,
            output,
            readers,
            deadline: Instant::now() + timeout,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything printed so far, lossily decoded.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the output contains `needle` (after byte `from`), or fails at the deadline.
    pub fn expect_after(&mut self, from: usize, needle: &str, within: Duration) -> Result<usize> {
        let until = self.deadline.min(Instant::now() + within);
        loop {
            let out = self.output();
            if let Some(pos) = out.get(from..).and_then(|tail| tail.find(needle)) {
                return Ok(from + pos + needle.len());
            }
            if Instant::now() > until {
                bail!("no {needle:?} within {within:?}; output so far:\n{out}");
            }
            if let Some(status) = self.child.try_wait()? {
                std::thread::sleep(Duration::from_millis(200));
                if !self.output()[from.min(self.output().len())..].contains(needle) {
                    bail!(
                        "exited ({status}) before printing {needle:?}; output:\n{}",
                        self.output()
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes `text` to the process's stdin.
    pub fn send(&mut self, text: &str) -> Result<()> {
        let stdin = self.child.stdin.as_mut().context("stdin already closed")?;
        stdin.write_all(text.as_bytes())?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits for the process to end, killing its group at the deadline.
    pub fn wait(mut self) -> Result<(ExitStatus, String)> {
        drop(self.child.stdin.take());
        loop {
            if let Some(status) = self.child.try_wait()? {
                for reader in std::mem::take(&mut self.readers) {
                    let _ = reader.join();
                }
                return Ok((status, self.output()));
            }
            if Instant::now() > self.deadline {
                self.kill();
                let _ = self.child.wait();
                bail!("killed at its deadline; output so far:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling our own child's process group.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` with stdin closed until it exits or `timeout` passes.
pub fn run_to_end(cmd: Command, timeout: Duration) -> Result<(ExitStatus, String)> {
    let mut session = Session::spawn(cmd, timeout)?;
    drop(session.child.stdin.take());
    session.wait()
}

/// Runs the vmm with `args` in `place` to the end, retrying once a boot that ended early
/// the way nested boots sometimes do (see [`early_end`]).
pub fn run_vmm(place: Place, args: &[String], timeout: Duration) -> Result<(ExitStatus, String)> {
    retry_early_end(place, || {
        let cmd = command_in(place, &vmm_binary(), args, timeout);
        run_to_end(cmd, timeout + Duration::from_secs(60))
    })
}

/// Exit status of resources/test-host.sh when the test host itself stopped.
const TEST_HOST_FAILED: i32 = 125;

/// Tells a run that ended before the guest printed its ready marker, without any error from
/// the vmm, apart from a failing test: the guest reset itself silently (vmm status 0 and no
/// marker), or the test host stopped. KVM-HERE.md measured such ends in 2 of 29 nested QEMU
/// boots with no message, so they are not blamed on the code under test. Returns why.
pub fn early_end(place: Place, status: &ExitStatus, output: &str) -> Option<String> {
    if output.contains("VMM-GUEST-READY") {
        return None;
    }
    match (place, status.code()) {
        (_, Some(0)) => Some("the guest reset before its ready marker, with no error".into()),
        (Place::TestHost, Some(TEST_HOST_FAILED)) => Some("the test host itself stopped".into()),
        _ => None,
    }
}

/// Starts the vmm with `args` in `place` with stdin piped, and waits for the guest's ready
/// marker, starting once more if the first boot ended early (see [`early_end`]). Returns the
/// session and the output offset just past the marker.
pub fn boot_session(place: Place, args: &[String], timeout: Duration) -> (Session, usize) {
    for attempt in 0..2 {
        let cmd = command_in(place, &vmm_binary(), args, timeout);
        let mut session = Session::spawn(cmd, timeout + Duration::from_secs(60)).unwrap();
        match session.expect_after(0, "VMM-GUEST-READY", timeout) {
            Ok(ready) => return (session, ready),
            Err(e) => {
                let status = session.child.try_wait().ok().flatten();
                let early = status.and_then(|s| early_end(place, &s, &session.output()));
                match early {
                    Some(why) if attempt == 0 => eprintln!("boot: {why}; retrying once:\n{e}"),
                    _ => panic!("{e}"),
                }
            }
        }
    }
    unreachable!("the second attempt returns or panics")
}

/// Runs `attempt`, and once more if it ended early (see [`early_end`]), saying so.
pub fn retry_early_end(
    place: Place,
    mut attempt: impl FnMut() -> Result<(ExitStatus, String)>,
) -> Result<(ExitStatus, String)> {
    let (status, output) = attempt()?;
    let Some(why) = early_end(place, &status, &output) else {
        return Ok((status, output));
    };
    eprintln!(
        "boot: {why} (a known nested-virtualization flake, not a test failure); retrying once"
    );
    eprintln!("boot: output of the first attempt:\n{output}");
    attempt()
}

/// Returns the output lines between the ready marker and the run's exit marker.
pub fn run_output(output: &str) -> Vec<String> {
    let normalized = output.replace('\r', "");
    let after_ready = normalized.split("VMM-GUEST-READY").nth(1).unwrap_or("");
    let before_exit = after_ready.split("VMM-RUN-EXIT=").next().unwrap_or("");
    before_exit
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Compiles the static guest program `source` (C, under tests/guest/) into `out` with gcc and
/// the extra `flags`.
pub fn compile_guest_tool(source: &Path, out: &Path, flags: &[&str]) -> Result<()> {
    let status = Command::new("gcc")
        .args(["-static", "-Wall"])
        .args(flags)
        .arg("-o")
        .arg(out)
        .arg(source)
        .status()
        .context("run gcc (Debian: apt-get install gcc libc6-dev)")?;
    if !status.success() {
        bail!("gcc could not compile {}", source.display());
    }
    Ok(())
}

/// Builds the project's small QXL guest (tests/guest/qxlbench.c, see its header) and returns
/// the ELF's path under target/qxlbench/. Safe to call from several test processes and
/// threads at once: each process builds it once.
pub fn qxlbench_guest() -> Result<PathBuf> {
    static BUILT: std::sync::OnceLock<std::result::Result<PathBuf, String>> =
        std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| build_qxlbench().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_qxlbench() -> Result<PathBuf> {
    let dir = repo_root().join("target/qxlbench");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("qxlbench.elf");
    let partial = dir.join(format!("qxlbench.elf.{}", std::process::id()));
    let flags = [
        "-nostdlib",
        "-ffreestanding",
        "-fno-pie",
        "-no-pie",
        "-O2",
        "-mgeneral-regs-only",
        "-mno-red-zone",
        "-fno-stack-protector",
        "-Wl,-Ttext-segment=0x200000",
        "-Wl,--build-id=none",
        "-e",
        "_start",
    ];
    let source = repo_root().join("tests/guest/qxlbench.c");
    compile_guest_tool(&source, &partial, &flags)?;
    std::fs::rename(&partial, &out)?;
    Ok(out)
}

/// The initramfs `base` (a test guest's, see [`guest_file`]) with the folder `tree/name`
/// appended as a second archive (the kernel unpacks concatenated archives; zero padding
/// between them is skipped), written to `dir/initramfs-NAME.cpio`. Returns its path.
pub fn initramfs_with(dir: &Path, base: &Path, tree: &Path, name: &str) -> Result<PathBuf> {
    let extra = dir.join(format!("{name}.cpio"));
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find '{name}' | cpio -o -H newc --quiet | gzip -1 > '{}'",
            tree.display(),
            extra.display()
        ))
        .status()
        .context("run cpio and gzip")?;
    if !status.success() {
        bail!("cpio could not pack {}", tree.join(name).display());
    }

    let combined = dir.join(format!("initramfs-{name}.cpio"));
    let mut bytes = std::fs::read(base)?;
    bytes.resize(bytes.len().next_multiple_of(512), 0);
    bytes.extend(std::fs::read(&extra)?);
    std::fs::write(&combined, bytes)?;
    Ok(combined)
}

/// What a benchmark over the project's own guest starts from: the number of runs (its first
/// argument, `default` without one), the guest ELF, and the vmm (`$VMM_BIN`, by default the
/// release build).
pub fn bench_setup(name: &str, default: usize) -> Result<(usize, PathBuf, PathBuf)> {
    let runs = match std::env::args().nth(1) {
        None => default,
        Some(n) => n
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("usage: {name} [RUNS]"))?,
    };
    let vmm = std::env::var_os("VMM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/vmm"));
    Ok((runs, qxlbench_guest()?, vmm))
}

/// Runs a shell `script` in `place` with `dir` as the test host's shared scratch folder,
/// retrying once a run that ended early the way nested boots sometimes do.
pub fn run_host_script(
    place: Place,
    script: &str,
    dir: &Path,
    timeout: Duration,
) -> Result<(ExitStatus, String)> {
    let sh = PathBuf::from("/bin/sh");
    retry_early_end(place, || {
        let args = ["-c".to_string(), script.to_string()];
        let mut cmd = command_in(place, &sh, &args, timeout);
        cmd.env("TEST_HOST_SCRATCH", dir);
        run_to_end(cmd, timeout + Duration::from_secs(60))
    })
}
