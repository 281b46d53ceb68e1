// SPDX-License-Identifier: Apache-2.0
//! Connects to a SPICE server, waits until its display is quiet, and writes the screen as a
//! PNG. The password, if any, comes from $SPICE_PASSWORD so that `ps` does not show it.
//!
//! Usage: spice-shot [--addr 127.0.0.1:5900] [--quiet-ms 500] [--timeout-s 30]
//!                   [--compression off|lz4|server] OUT.png

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use vmm_tests::spice_client::{ImageCompression, Options, SpiceClient};

/// Which images to ask the server for.
#[derive(Clone, Copy, ValueEnum)]
enum Compression {
    /// Raw bitmaps.
    Off,
    /// LZ4.
    Lz4,
    /// Whatever the server is configured for (QEMU's default, GLZ, is not decoded).
    Server,
}

/// Takes a screenshot over SPICE.
#[derive(Parser)]
struct Args {
    /// The SPICE server's address.
    #[arg(long, default_value = "127.0.0.1:5900")]
    addr: SocketAddr,
    /// How long the display must stay without updates before the shot, in milliseconds.
    #[arg(long, default_value_t = 500)]
    quiet_ms: u64,
    /// Gives up after this many seconds (connecting and waiting each).
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
    /// Image compression to ask for.
    #[arg(long, value_enum, default_value = "off")]
    compression: Compression,
    /// Where to write the PNG.
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let timeout = Duration::from_secs(args.timeout_s);
    let options = Options {
        password: std::env::var("SPICE_PASSWORD").ok(),
        timeout,
        compression: match args.compression {
            Compression::Off => Some(ImageCompression::Off),
            Compression::Lz4 => Some(ImageCompression::Lz4),
            Compression::Server => None,
        },
    };

    let client = SpiceClient::connect_with(args.addr, &options)
        .with_context(|| format!("connect to {}", args.addr))?;
    client
        .wait_quiet(Duration::from_millis(args.quiet_ms), timeout)
        .context("wait for a quiet display")?;
    let screen = client.screen().context("no primary surface")?;
    screen
        .write_png(&args.out)
        .with_context(|| format!("write {}", args.out.display()))?;

    let stats = client.stats();
    eprintln!(
        "{}x{} written to {} ({} display messages, {} bytes)",
        screen.width,
        screen.height,
        args.out.display(),
        stats.display_messages,
        stats.display_bytes
    );
    Ok(())
}
