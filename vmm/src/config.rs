// SPDX-License-Identifier: Apache-2.0
//! Command line options and the VM configuration they parse into.
//!
//! Options follow cloud-hypervisor's spelling: one flag per part of the machine, each taking a
//! `key=value` list (`--memory size=512M`, `--cpus boot=2`) or, for the common case, the bare
//! value (`--memory 512M`, `--cpus 2`).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use clap::{ArgAction, Parser};
use thiserror::Error;

/// The command line used when `--cmdline` is not given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";
/// The x86 kernel's COMMAND_LINE_SIZE, which includes the terminating NUL.
pub const MAX_CMDLINE_LEN: usize = 2048;
/// The least memory a Debian kernel with a small initramfs boots in.
pub const MIN_MEMORY: u64 = 64 << 20;
/// vCPUs are numbered by 8-bit xAPIC IDs in the MADT; 255 is the broadcast ID.
pub const MAX_VCPUS: u8 = 254;

const PAGE_SIZE: u64 = 4096;

/// Errors in option values.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A size was not a number with an optional K, M, G or T suffix.
    #[error("invalid size '{0}': use a number with an optional K, M, G or T suffix, e.g. 512M")]
    InvalidSize(String),
    /// A key the option does not know.
    #[error("unknown key '{key}' in --{option}: valid keys are {valid}")]
    UnknownKey {
        /// The option being parsed.
        option: &'static str,
        /// The key that was given.
        key: String,
        /// The keys the option takes.
        valid: &'static str,
    },
    /// Memory below what Linux needs.
    #[error(
        "--memory {0} MiB is too small: Linux needs at least {min} MiB",
        min = MIN_MEMORY >> 20
    )]
    MemoryTooSmall(u64),
    /// Memory not a whole number of pages.
    #[error("--memory must be a multiple of 4 KiB")]
    MemoryNotAligned,
    /// A vCPU count that is not a number.
    #[error("invalid vCPU count '{0}': use a whole number, e.g. --cpus boot=2")]
    InvalidCpus(String),
    /// Zero vCPUs or more than the machine can number.
    #[error("--cpus boot={0} is out of range: use 1 to {max}", max = MAX_VCPUS)]
    CpusOutOfRange(u64),
    /// A serial mode that does not exist.
    #[error("invalid --serial '{0}': use tty, off or file=PATH")]
    InvalidSerial(String),
    /// A display device that does not exist.
    #[error("invalid --display '{0}': use qxl or none")]
    InvalidDisplay(String),
    /// A command line the kernel would truncate.
    #[error(
        "--cmdline is {0} bytes; the kernel takes at most {max} (COMMAND_LINE_SIZE {size} \
         including the terminating NUL)",
        max = MAX_CMDLINE_LEN - 1,
        size = MAX_CMDLINE_LEN
    )]
    CmdlineTooLong(usize),
    /// A command line with a NUL byte, which would cut it short.
    #[error("--cmdline contains a NUL byte")]
    CmdlineHasNul,
    /// A --spice value that does not parse.
    #[error("invalid --spice '{0}': {1}")]
    InvalidSpice(String, &'static str),
    /// SPICE without a password and without saying so.
    #[error(
        "--spice needs a password (password-file=PATH) or an explicit disable-ticketing=on, \
         which lets anyone who reaches the port see and drive the guest"
    )]
    SpiceWithoutTicketing,
    /// SPICE with nothing to show.
    #[error("--spice needs the QXL display: drop --display none")]
    SpiceWithoutDisplay,
}

/// The SPICE server's settings (`--spice`), spelled as QEMU spells them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpiceOptions {
    /// Address to listen on; loopback unless the user asks otherwise.
    pub addr: IpAddr,
    /// TCP port.
    pub port: u16,
    /// File whose first line is the password; `None` with ticketing disabled.
    pub password_file: Option<PathBuf>,
}

/// Where the guest's COM1 goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialConfig {
    /// Input from stdin, output to stdout; the terminal is put in raw mode when stdin is one.
    Tty,
    /// Output appended to a file; no input.
    File(PathBuf),
    /// No serial port.
    Off,
}

/// The guest's display device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisplayConfig {
    /// A QXL PCI display (class display/other, revision 6).
    Qxl,
    /// No display device.
    None,
}

/// `vmm` boots a Linux kernel in a KVM virtual machine.
#[derive(Debug, Parser)]
#[command(name = "vmm", version, about, long_about = None)]
#[command(after_help = "Examples:\n  \
    vmm --kernel bzImage --initramfs initramfs.cpio.gz --memory 512M --cpus 2\n  \
    vmm --kernel vmlinux --cmdline \"console=ttyS0 root=/dev/vda\" --serial file=guest.log\n\n\
    With --serial tty on a terminal, press Ctrl-A then X to quit the VMM.")]
pub struct Cli {
    /// Linux kernel to boot: a bzImage or an uncompressed ELF vmlinux (detected from content).
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,

    /// Initramfs (initrd) image to load for the kernel.
    #[arg(long, value_name = "PATH")]
    pub initramfs: Option<PathBuf>,

    /// Kernel command line, replacing the default. Limited to 2047 bytes.
    #[arg(long, value_name = "STR", allow_hyphen_values = true, default_value = DEFAULT_CMDLINE)]
    pub cmdline: String,

    /// Guest memory: size=SIZE or SIZE, with a K, M, G or T suffix. Memory past 3 GiB is
    /// placed above 4 GiB, leaving room for PCI devices below 4 GiB.
    #[arg(long, value_name = "size=SIZE", default_value = "size=512M")]
    pub memory: String,

    /// vCPUs: boot=N or N.
    #[arg(long, value_name = "boot=N", default_value = "boot=1")]
    pub cpus: String,

    /// Serial console (COM1, the guest's ttyS0): tty (stdin and stdout), file=PATH or off.
    #[arg(long, value_name = "tty|file=PATH|off", default_value = "tty")]
    pub serial: String,

    /// Display device: qxl (a QXL PCI display, driven by Linux's qxl driver) or none.
    #[arg(long, value_name = "qxl|none", default_value = "qxl")]
    pub display: String,

    /// Serve the display, keyboard and mouse to SPICE clients (remote-viewer):
    /// port=N[,addr=IP][,password-file=PATH][,disable-ticketing=on]. The address defaults to
    /// 127.0.0.1; a password, or disable-ticketing=on, is required.
    #[arg(long, value_name = "port=N,...")]
    pub spice: Option<String>,

    /// End the VMM when the guest reboots (exit status 0) instead of booting it again.
    #[arg(long)]
    pub no_reboot: bool,

    /// Serve the control socket (QMP-shaped JSON: query-status, query-qxl, screendump,
    /// quit) on this Unix socket path.
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,

    /// More log output on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides).
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,
}

/// A checked VM configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    /// Kernel image path.
    pub kernel: PathBuf,
    /// Initramfs path.
    pub initramfs: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// Guest memory in bytes.
    pub memory_size: u64,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Serial console.
    pub serial: SerialConfig,
    /// Display device.
    pub display: DisplayConfig,
    /// Control socket path.
    pub api_socket: Option<PathBuf>,
    /// The SPICE server, if any.
    pub spice: Option<SpiceOptions>,
    /// Whether a guest reboot boots a fresh VM (true) or ends the VMM.
    pub reboot: bool,
}

impl TryFrom<&Cli> for VmConfig {
    type Error = ConfigError;

    fn try_from(cli: &Cli) -> Result<Self, ConfigError> {
        VmConfig {
            kernel: cli.kernel.clone(),
            initramfs: cli.initramfs.clone(),
            cmdline: parse_cmdline(&cli.cmdline)?,
            memory_size: parse_memory(&cli.memory)?,
            vcpus: parse_cpus(&cli.cpus)?,
            serial: parse_serial(&cli.serial)?,
            display: parse_display(&cli.display)?,
            api_socket: cli.api_socket.clone(),
            spice: cli.spice.as_deref().map(parse_spice).transpose()?,
            reboot: !cli.no_reboot,
        }
        .checked()
    }
}

impl VmConfig {
    /// Checks the options against each other.
    fn checked(self) -> Result<Self, ConfigError> {
        if self.spice.is_some() && self.display == DisplayConfig::None {
            return Err(ConfigError::SpiceWithoutDisplay);
        }
        Ok(self)
    }
}

/// Parses `port=N[,addr=IP][,password-file=PATH][,disable-ticketing=on]`.
fn parse_spice(input: &str) -> Result<SpiceOptions, ConfigError> {
    let invalid = |why| ConfigError::InvalidSpice(input.to_string(), why);
    let (mut port, mut addr, mut password_file, mut no_ticket) = (None, None, None, false);
    for (key, value) in key_values(input, "port") {
        match key {
            "port" => {
                port = Some(
                    value
                        .parse()
                        .map_err(|_| invalid("port must be 1 to 65535"))?,
                )
            }
            "addr" => addr = Some(value.parse().map_err(|_| invalid("addr must be an IP"))?),
            "password-file" if !value.is_empty() => password_file = Some(PathBuf::from(value)),
            "disable-ticketing" => no_ticket = parse_on_off(value).ok_or(invalid("on or off"))?,
            _ => {
                return Err(ConfigError::UnknownKey {
                    option: "spice",
                    key: key.to_string(),
                    valid: "port, addr, password-file, disable-ticketing",
                })
            }
        }
    }

    let port = port
        .filter(|&p| p != 0)
        .ok_or(invalid("port=N is required (1 to 65535)"))?;
    match (&password_file, no_ticket) {
        (None, false) => return Err(ConfigError::SpiceWithoutTicketing),
        (Some(_), true) => return Err(invalid("password-file and disable-ticketing=on conflict")),
        _ => {}
    }
    Ok(SpiceOptions {
        addr: addr.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        port,
        password_file,
    })
}

/// QEMU's spellings of a boolean.
fn parse_on_off(value: &str) -> Option<bool> {
    match value {
        "on" | "yes" | "true" => Some(true),
        "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// Splits `input` into `key=value` pairs; a lone word is returned as the value of
/// `default_key`.
fn key_values<'a>(input: &'a str, default_key: &'a str) -> Vec<(&'a str, &'a str)> {
    input
        .split(',')
        .map(|item| item.split_once('=').unwrap_or((default_key, item)))
        .collect()
}

/// Parses a size such as `512M`, `2G`, `65536` or `1GiB` into bytes.
pub fn parse_size(input: &str) -> Result<u64, ConfigError> {
    let invalid = || ConfigError::InvalidSize(input.to_string());
    let s = input.trim();
    let s = s
        .strip_suffix("iB")
        .or_else(|| s.strip_suffix('B'))
        .unwrap_or(s);

    let (digits, shift) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 10),
        Some((i, 'M' | 'm')) => (&s[..i], 20),
        Some((i, 'G' | 'g')) => (&s[..i], 30),
        Some((i, 'T' | 't')) => (&s[..i], 40),
        _ => (s, 0),
    };

    let value: u64 = digits.parse().map_err(|_| invalid())?;
    value.checked_mul(1 << shift).ok_or_else(invalid)
}

fn parse_memory(input: &str) -> Result<u64, ConfigError> {
    let mut size = None;
    for (key, value) in key_values(input, "size") {
        match key {
            "size" => size = Some(parse_size(value)?),
            _ => {
                let key = key.to_string();
                return Err(ConfigError::UnknownKey {
                    option: "memory",
                    key,
                    valid: "size",
                });
            }
        }
    }

    let size = size.ok_or_else(|| ConfigError::InvalidSize(input.to_string()))?;
    if size < MIN_MEMORY {
        return Err(ConfigError::MemoryTooSmall(size >> 20));
    }
    if size % PAGE_SIZE != 0 {
        return Err(ConfigError::MemoryNotAligned);
    }
    Ok(size)
}

fn parse_cpus(input: &str) -> Result<u8, ConfigError> {
    let mut boot = None;
    for (key, value) in key_values(input, "boot") {
        match key {
            "boot" => {
                let n: u64 = value
                    .parse()
                    .map_err(|_| ConfigError::InvalidCpus(value.into()))?;
                boot = Some(n);
            }
            _ => {
                let key = key.to_string();
                return Err(ConfigError::UnknownKey {
                    option: "cpus",
                    key,
                    valid: "boot",
                });
            }
        }
    }

    let boot = boot.ok_or_else(|| ConfigError::InvalidCpus(input.to_string()))?;
    match u8::try_from(boot) {
        Ok(n @ 1..=MAX_VCPUS) => Ok(n),
        _ => Err(ConfigError::CpusOutOfRange(boot)),
    }
}

fn parse_serial(input: &str) -> Result<SerialConfig, ConfigError> {
    match input.split_once('=') {
        None if input == "tty" => Ok(SerialConfig::Tty),
        None if input == "off" => Ok(SerialConfig::Off),
        Some(("file", path)) if !path.is_empty() => Ok(SerialConfig::File(path.into())),
        _ => Err(ConfigError::InvalidSerial(input.to_string())),
    }
}

fn parse_display(input: &str) -> Result<DisplayConfig, ConfigError> {
    match input {
        "qxl" => Ok(DisplayConfig::Qxl),
        "none" => Ok(DisplayConfig::None),
        _ => Err(ConfigError::InvalidDisplay(input.to_string())),
    }
}

/// Checks a kernel command line; it is passed to the guest byte for byte, `--` separators
/// included.
pub fn parse_cmdline(input: &str) -> Result<String, ConfigError> {
    if input.len() >= MAX_CMDLINE_LEN {
        return Err(ConfigError::CmdlineTooLong(input.len()));
    }
    if input.contains('\0') {
        return Err(ConfigError::CmdlineHasNul);
    }
    Ok(input.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<VmConfig, String> {
        let mut argv = vec!["vmm", "--kernel", "k"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        VmConfig::try_from(&cli).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let config = cli(&[]).unwrap();
        assert_eq!(config.memory_size, 512 << 20);
        assert_eq!(config.vcpus, 1);
        assert_eq!(config.serial, SerialConfig::Tty);
        assert_eq!(config.cmdline, DEFAULT_CMDLINE);
        assert_eq!(config.initramfs, None);
        assert_eq!(config.display, DisplayConfig::Qxl);
        assert_eq!(config.api_socket, None);
    }

    #[test]
    fn kernel_is_required() {
        assert!(Cli::try_parse_from(["vmm"]).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        for bad in [
            "",
            "M",
            "12X",
            "-1G",
            "1.5G",
            "99999999999999999999",
            "18446744073709551615K",
        ] {
            assert_eq!(
                parse_size(bad),
                Err(ConfigError::InvalidSize(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn memory_key_value_and_plain_forms() {
        assert_eq!(cli(&["--memory", "size=1G"]).unwrap().memory_size, 1 << 30);
        assert_eq!(cli(&["--memory", "768M"]).unwrap().memory_size, 768 << 20);
        assert_eq!(cli(&["--memory", "size=8G"]).unwrap().memory_size, 8 << 30);
    }

    #[test]
    fn memory_errors() {
        let err = cli(&["--memory", "32M"]).unwrap_err();
        assert!(err.contains("too small") && err.contains("64 MiB"), "{err}");
        assert!(cli(&["--memory", "size=abc"])
            .unwrap_err()
            .contains("invalid size 'abc'"));
        assert!(cli(&["--memory", "65537K"])
            .unwrap_err()
            .contains("multiple of 4 KiB"));
        let err = cli(&["--memory", "shared=on"]).unwrap_err();
        assert!(err.contains("unknown key 'shared'"), "{err}");
    }

    #[test]
    fn cpus() {
        assert_eq!(cli(&["--cpus", "boot=2"]).unwrap().vcpus, 2);
        assert_eq!(cli(&["--cpus", "4"]).unwrap().vcpus, 4);
        assert_eq!(cli(&["--cpus", "254"]).unwrap().vcpus, 254);
        for bad in ["0", "boot=0", "255", "100000"] {
            let err = cli(&["--cpus", bad]).unwrap_err();
            assert!(err.contains("out of range: use 1 to 254"), "{bad}: {err}");
        }
        assert!(cli(&["--cpus", "two"])
            .unwrap_err()
            .contains("invalid vCPU count 'two'"));
        assert!(cli(&["--cpus", "max=4"])
            .unwrap_err()
            .contains("unknown key 'max'"));
    }

    #[test]
    fn serial() {
        assert_eq!(cli(&["--serial", "off"]).unwrap().serial, SerialConfig::Off);
        assert_eq!(
            cli(&["--serial", "file=/tmp/x.log"]).unwrap().serial,
            SerialConfig::File("/tmp/x.log".into())
        );
        for bad in ["file=", "pty", "file", "tty=1"] {
            assert!(cli(&["--serial", bad])
                .unwrap_err()
                .contains("use tty, off or file=PATH"));
        }
    }

    #[test]
    fn cmdline_limit_is_2047_bytes_and_text_passes_verbatim() {
        let max = "x".repeat(2047);
        assert_eq!(cli(&["--cmdline", &max]).unwrap().cmdline, max);

        let over = "x".repeat(2048);
        let err = cli(&["--cmdline", &over]).unwrap_err();
        assert!(
            err.contains("2048 bytes") && err.contains("at most 2047"),
            "{err}"
        );

        let dashes = "console=ttyS0 -- a -- b";
        assert_eq!(cli(&["--cmdline", dashes]).unwrap().cmdline, dashes);
        assert_eq!(cli(&["--cmdline", "--"]).unwrap().cmdline, "--");
        assert_eq!(parse_cmdline("a\0b"), Err(ConfigError::CmdlineHasNul));
    }

    #[test]
    fn display() {
        assert_eq!(
            cli(&["--display", "qxl"]).unwrap().display,
            DisplayConfig::Qxl
        );
        assert_eq!(
            cli(&["--display", "none"]).unwrap().display,
            DisplayConfig::None
        );
        assert!(cli(&["--display", "vga"])
            .unwrap_err()
            .contains("use qxl or none"));
    }

    #[test]
    fn spice_options_are_spelled_as_in_qemu() {
        let spice = |arg: &str| cli(&["--spice", arg]).map(|c| c.spice.unwrap());
        let open = spice("port=5900,disable-ticketing=on").unwrap();
        assert_eq!(
            open.addr,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            "loopback by default"
        );
        assert_eq!((open.port, open.password_file), (5900, None));

        let locked = spice("port=5901,addr=::1,password-file=/run/pw").unwrap();
        assert_eq!(locked.addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(locked.password_file, Some(PathBuf::from("/run/pw")));
        assert_eq!(spice("5902,disable-ticketing=yes").unwrap().port, 5902);

        let refused = [
            ("port=5900", "needs a password"),
            ("addr=127.0.0.1,disable-ticketing=on", "port=N is required"),
            ("port=0,disable-ticketing=on", "port=N is required"),
            ("port=70000,disable-ticketing=on", "port must be"),
            (
                "port=5900,addr=localhost,disable-ticketing=on",
                "addr must be an IP",
            ),
            ("port=5900,disable-ticketing=maybe", "on or off"),
            (
                "port=5900,password-file=/pw,disable-ticketing=on",
                "conflict",
            ),
            ("port=5900,tls-port=5901", "unknown key 'tls-port'"),
        ];
        for (arg, why) in refused {
            let err = spice(arg).unwrap_err();
            assert!(err.contains(why), "--spice {arg}: {err}");
        }
        let err = cli(&[
            "--display",
            "none",
            "--spice",
            "port=1,disable-ticketing=on",
        ]);
        assert!(err.unwrap_err().contains("needs the QXL display"));
    }

    #[test]
    fn verbosity_counts() {
        let parsed = Cli::try_parse_from(["vmm", "--kernel", "k", "-vv"]).unwrap();
        assert_eq!(parsed.verbose, 2);
    }
}
