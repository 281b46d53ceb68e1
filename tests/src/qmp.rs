// SPDX-License-Identifier: Apache-2.0
//! A client for QMP-shaped control sockets: the vmm's `--api-socket` and QEMU's `-qmp`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

/// A connection past the greeting and capability negotiation.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to `socket`, retrying until `within` has passed (the server may still be
    /// starting), reads the greeting and sends `qmp_capabilities`. Each reply is awaited for
    /// at most `reply_timeout`.
    pub fn connect(socket: &Path, within: Duration, reply_timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + within;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => return Err(e).with_context(|| format!("connect {}", socket.display())),
            }
        };
        stream.set_read_timeout(Some(reply_timeout))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        qmp.read_reply().context("read the greeting")?;
        qmp.call(r#"{"execute":"qmp_capabilities"}"#)?;
        Ok(qmp)
    }

    /// Sends one request and returns its `return` value; an error reply is an error. Events
    /// (QEMU sends them unasked) are skipped.
    pub fn call(&mut self, request: &str) -> Result<Value> {
        writeln!(self.writer, "{request}")?;
        loop {
            let reply = self.read_reply()?;
            if reply.get("event").is_some() {
                continue;
            }
            return reply
                .get("return")
                .cloned()
                .with_context(|| format!("{request} failed: {reply}"));
        }
    }

    /// Times one `query-status`, in nanoseconds.
    pub fn time_query_status(&mut self) -> Result<u64> {
        let start = Instant::now();
        self.call(r#"{"execute":"query-status"}"#)?;
        Ok(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn read_reply(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).context("read a reply")?;
        anyhow::ensure!(n > 0, "the server closed the socket");
        serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))
    }
}
