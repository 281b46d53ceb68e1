// SPDX-License-Identifier: Apache-2.0
//! A minimal client for the vmm's control socket: sends each argument as one request line
//! and prints each reply line. Used by tests inside the test host, where the socket lives.
//!
//! Usage: qmp SOCKET REQUEST_JSON [REQUEST_JSON...]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((socket, requests)) = args.split_first() else {
        bail!("usage: qmp SOCKET REQUEST_JSON [REQUEST_JSON...]");
    };

    let stream = UnixStream::connect(socket).with_context(|| format!("connect {socket}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line).context("read the greeting")?;

    let mut writer = stream;
    for request in requests {
        writer.write_all(request.as_bytes())?;
        writer.write_all(b"\n")?;
        line.clear();
        reader.read_line(&mut line).context("read a reply")?;
        print!("{line}");
    }
    Ok(())
}
