// SPDX-License-Identifier: Apache-2.0
//! A linked channel's message stream: bounded reads, serialized writes, and the messages every
//! channel answers the same way (SET_ACK, PING and the ack window).

use std::io::BufReader;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::link::{remaining, Linked};
use super::wire::{self, io_error, msg, msgc, Bytes, Message};
use super::ClientError;

/// A write that takes longer than this fails: a server that stops reading cannot hang a test.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends client messages on one channel; shared by its reader thread and the API.
#[derive(Debug)]
pub struct Writer {
    stream: Mutex<(TcpStream, u64)>,
    mini: bool,
}

impl Writer {
    /// Frames and sends one message.
    pub fn send(&self, kind: u16, body: &[u8]) -> Result<(), ClientError> {
        self.send_all(&[(kind, body)])
    }

    /// Frames several messages and sends them in one write.
    pub fn send_all(&self, messages: &[(u16, &[u8])]) -> Result<(), ClientError> {
        use std::io::Write;

        let mut guard = self.stream.lock().expect("writer lock");
        let (stream, serial) = &mut *guard;
        let mut bytes = Vec::new();
        for (kind, body) in messages {
            *serial += 1;
            bytes.extend(wire::encode_message(*kind, body, self.mini, *serial));
        }
        stream
            .write_all(&bytes)
            .map_err(|e| io_error("send a message", e))
    }
}

/// The receiving side of a linked channel.
pub struct Channel {
    /// "main", "display", "inputs" or "cursor", for errors.
    pub name: &'static str,
    reader: BufReader<TcpStream>,
    /// The sending side.
    pub writer: Arc<Writer>,
    mini: bool,
    max_message: u32,
    ack_window: u32,
    unacked: u32,
}

impl Channel {
    /// Wraps a linked channel; messages over `max_message` bytes are refused.
    pub fn new(name: &'static str, linked: Linked, max_message: u32) -> Result<Self, ClientError> {
        let step = "set up the channel socket";
        let stream = linked.stream;
        stream
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(|e| io_error(step, e))?;
        let writer = stream.try_clone().map_err(|e| io_error(step, e))?;
        Ok(Channel {
            name,
            reader: BufReader::new(stream),
            writer: Arc::new(Writer {
                stream: Mutex::new((writer, 0)),
                mini: linked.mini,
            }),
            mini: linked.mini,
            max_message,
            ack_window: 0,
            unacked: 0,
        })
    }

    /// A handle on the socket, to shut it down from another thread.
    pub fn socket(&self) -> Result<TcpStream, ClientError> {
        self.reader
            .get_ref()
            .try_clone()
            .map_err(|e| io_error("clone the channel socket", e))
    }

    /// Bounds the next reads by `deadline`, or lets them block (None) once a reader thread
    /// owns the channel and shutting the socket down is how it is stopped.
    pub fn set_deadline(&self, deadline: Option<Instant>, step: &str) -> Result<(), ClientError> {
        let timeout = deadline.map(|d| remaining(d, step)).transpose()?;
        self.reader
            .get_ref()
            .set_read_timeout(timeout)
            .map_err(|e| io_error("set the read timeout", e))
    }

    /// Reads the next message for the channel's own handler, answering SET_ACK and PING on the
    /// way and acknowledging every `window` messages once the server asked for acks.
    pub fn next(&mut self) -> Result<Message, ClientError> {
        loop {
            let message = wire::read_message(&mut self.reader, self.mini, self.max_message)?;
            self.count_for_ack()?;
            match message.kind {
                msg::SET_ACK => self.set_ack(&message.body)?,
                msg::PING => self.pong(&message.body)?,
                _ => return Ok(message),
            }
        }
    }

    fn count_for_ack(&mut self) -> Result<(), ClientError> {
        if self.ack_window == 0 {
            return Ok(());
        }
        self.unacked += 1;
        if self.unacked >= self.ack_window {
            self.unacked = 0;
            self.writer.send(msgc::ACK, &[])?;
        }
        Ok(())
    }

    /// SET_ACK: u32 generation, u32 window. Answer ACK_SYNC(generation), then ack per window.
    fn set_ack(&mut self, body: &[u8]) -> Result<(), ClientError> {
        let mut bytes = Bytes::new(body, "SET_ACK");
        let generation = bytes.u32()?;
        self.ack_window = bytes.u32()?;
        self.unacked = 0;
        self.writer.send(msgc::ACK_SYNC, &generation.to_le_bytes())
    }

    /// PING: u32 id, u64 timestamp, data. Answer PONG(id, timestamp).
    fn pong(&mut self, body: &[u8]) -> Result<(), ClientError> {
        let pong = Bytes::new(body, "PING").take(12)?;
        self.writer.send(msgc::PONG, pong)
    }
}
