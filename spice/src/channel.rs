// SPDX-License-Identifier: Apache-2.0
//! What every linked channel shares: the outbox between producers and the writer thread, the
//! writer (framing, ack window, pings, stall detection) and the reader loop (framing, size
//! bounds, common client messages).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::display_msg::OutMsg;
use crate::proto::*;
use crate::wire::{HeaderKind, Reader, Writer};

/// Messages between two ACKs the client is asked for (spice-server uses 20 on fast links).
pub const ACK_WINDOW: u32 = 20;
/// Largest client message body accepted; spice-gtk's largest are agent data chunks (2 KiB).
pub const MAX_CLIENT_MSG: u32 = 64 * 1024;
/// How often a channel pings its client.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
/// A ping unanswered this long, or output that cannot leave this long, closes the channel.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Granularity of the writer's timers and socket timeouts.
const TICK: Duration = Duration::from_secs(1);
/// Most messages a small (non-display) queue holds before the client counts as misbehaving.
const MAX_SMALL_QUEUE: usize = 256;

/// The outgoing queue of one channel kind.
pub trait Queue: Send + 'static {
    /// Takes the next message to send.
    fn pop(&mut self) -> Option<OutMsg>;

    /// Returns (once) whether the producer must be signalled (the display refresh).
    fn take_signal(&mut self) -> bool {
        false
    }
}

/// A bounded FIFO for channels whose output is a few replies (main, inputs).
#[derive(Debug, Default)]
pub struct SmallQueue {
    items: VecDeque<OutMsg>,
}

impl SmallQueue {
    /// Queues `msg`; fails when the client has left [`MAX_SMALL_QUEUE`] replies unread.
    pub fn push(&mut self, msg: OutMsg) -> Result<(), String> {
        if self.items.len() >= MAX_SMALL_QUEUE {
            return Err("client does not read its replies".into());
        }
        self.items.push_back(msg);
        Ok(())
    }
}

impl Queue for SmallQueue {
    fn pop(&mut self) -> Option<OutMsg> {
        self.items.pop_front()
    }
}

/// Acknowledgement window state (SET_ACK / ACK_SYNC / ACK).
#[derive(Debug, Default)]
struct AckWindow {
    enabled: bool,
    synced: bool,
    unacked: u32,
}

impl AckWindow {
    fn can_send(&self) -> bool {
        !self.enabled || self.unacked < 2 * ACK_WINDOW
    }
}

/// State guarded by the outbox lock.
#[derive(Debug)]
pub struct OutboxState<Q> {
    /// The channel's queue.
    pub queue: Q,
    ack: AckWindow,
    closed: bool,
    ping: Option<(u32, Instant)>,
    next_ping_id: u32,
}

/// The queue of one channel connection, shared by its producers and its writer thread. The
/// lock is only held for queue operations, never across socket I/O.
#[derive(Debug)]
pub struct Outbox<Q> {
    state: Mutex<OutboxState<Q>>,
    cond: Condvar,
}

impl<Q: Queue> Outbox<Q> {
    /// Creates an open outbox around `queue`.
    pub fn new(queue: Q) -> Arc<Self> {
        Arc::new(Outbox {
            state: Mutex::new(OutboxState {
                queue,
                ack: AckWindow::default(),
                closed: false,
                ping: None,
                next_ping_id: 0,
            }),
            cond: Condvar::new(),
        })
    }

    /// Locks the state (a panic elsewhere does not make the queue unusable).
    pub fn lock(&self) -> MutexGuard<'_, OutboxState<Q>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the queue and wakes the writer.
    pub fn with<R>(&self, f: impl FnOnce(&mut Q) -> R) -> R {
        let r = f(&mut self.lock().queue);
        self.cond.notify_all();
        r
    }

    /// Marks the channel closed; the writer stops at its next look at the queue.
    pub fn close(&self) {
        self.lock().closed = true;
        self.cond.notify_all();
    }

    /// Returns whether the channel was closed.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn on_ack_sync(&self) {
        // Messages sent since SET_ACK keep counting: the client counts them too.
        self.lock().ack.synced = true;
    }

    fn on_ack(&self) {
        let mut st = self.lock();
        if st.ack.synced {
            st.ack.unacked = st.ack.unacked.saturating_sub(ACK_WINDOW);
        }
        drop(st);
        self.cond.notify_all();
    }

    fn on_pong(&self, id: u32) {
        let mut st = self.lock();
        if st.ping.is_some_and(|(sent, _)| sent == id) {
            st.ping = None;
        }
    }
}

/// What the writer does next.
enum Next {
    Send(OutMsg),
    Signal,
    Stop(Option<String>),
}

impl<Q: Queue> Outbox<Q> {
    /// Waits for the next thing to do, enforcing the ack window, pings and stall limits.
    fn next(&self, next_ping: &mut Instant) -> Next {
        let mut st = self.lock();
        let mut blocked_since: Option<Instant> = None;
        loop {
            if st.closed {
                return Next::Stop(None);
            }
            if st.queue.take_signal() {
                return Next::Signal;
            }
            let now = Instant::now();
            if let Some((_, sent)) = st.ping {
                if now.duration_since(sent) > STALL_TIMEOUT {
                    return Next::Stop(Some("client did not answer a ping".into()));
                }
            } else if now >= *next_ping {
                *next_ping = now + PING_INTERVAL;
                st.next_ping_id = st.next_ping_id.wrapping_add(1);
                st.ping = Some((st.next_ping_id, now));
                return Next::Send(ping(st.next_ping_id));
            }
            if st.ack.can_send() {
                if let Some(msg) = st.queue.pop() {
                    if st.ack.enabled {
                        st.ack.unacked += 1;
                    }
                    return Next::Send(msg);
                }
                blocked_since = None;
            } else if now.duration_since(*blocked_since.get_or_insert(now)) > STALL_TIMEOUT {
                return Next::Stop(Some("client stopped acknowledging messages".into()));
            }
            st = self
                .cond
                .wait_timeout(st, TICK)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// A PING with a timestamp and no payload.
fn ping(id: u32) -> OutMsg {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let mut w = Writer::with_capacity(12);
    w.u32(id).u64(stamp);
    OutMsg::new(MSG_PING, w.finish())
}

/// Frames and writes messages for one channel connection.
pub struct ChannelWriter {
    stream: TcpStream,
    header: HeaderKind,
    serial: u64,
}

impl ChannelWriter {
    /// Wraps the connection's socket.
    pub fn new(stream: TcpStream, header: HeaderKind) -> io::Result<Self> {
        stream.set_write_timeout(Some(TICK))?;
        stream.set_nodelay(true)?;
        Ok(ChannelWriter {
            stream,
            header,
            serial: 0,
        })
    }

    /// Writes one message; gives up when no byte leaves for [`STALL_TIMEOUT`] or the outbox
    /// is closed meanwhile.
    fn send<Q: Queue>(&mut self, msg: &OutMsg, outbox: &Outbox<Q>) -> io::Result<()> {
        self.serial += 1;
        let len = u32::try_from(msg.body.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut frame = self.header.encode(self.serial, msg.msg_type, len);
        frame.extend_from_slice(&msg.body);

        let mut done = 0;
        let mut progress = Instant::now();
        while done < frame.len() {
            match self.stream.write(&frame[done..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    done += n;
                    progress = Instant::now();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if outbox.is_closed() {
                        return Err(io::ErrorKind::ConnectionAborted.into());
                    }
                    if progress.elapsed() > STALL_TIMEOUT {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "client stopped reading",
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Runs until the outbox closes or the socket fails: sends SET_ACK first when `acks`,
    /// then the queue, pings, and `signal` calls when the queue asks for them.
    pub fn run<Q: Queue>(mut self, outbox: &Outbox<Q>, acks: bool, signal: &dyn Fn(), name: &str) {
        let mut next_ping = Instant::now() + PING_INTERVAL;
        if acks {
            outbox.lock().ack.enabled = true;
            let mut w = Writer::with_capacity(8);
            w.u32(1).u32(ACK_WINDOW);
            if let Err(e) = self.send(&OutMsg::new(MSG_SET_ACK, w.finish()), outbox) {
                log::info!("spice: {name} channel closed: {e}");
                return self.stop(outbox);
            }
        }
        loop {
            match outbox.next(&mut next_ping) {
                Next::Send(msg) => {
                    if let Err(e) = self.send(&msg, outbox) {
                        if !outbox.is_closed() {
                            log::info!("spice: {name} channel closed: {e}");
                        }
                        break;
                    }
                }
                Next::Signal => signal(),
                Next::Stop(reason) => {
                    if let Some(reason) = reason {
                        log::warn!("spice: closing {name} channel: {reason}");
                    }
                    break;
                }
            }
        }
        self.stop(outbox);
    }

    fn stop<Q: Queue>(&self, outbox: &Outbox<Q>) {
        outbox.close();
        // Unblocks the reader; an already closed socket is fine.
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Reads framed client messages, handles the common ones and passes the rest to `handle`.
/// Returns `Ok` when the client disconnects cleanly and the reason to log otherwise.
pub fn read_loop<Q: Queue>(
    stream: &mut TcpStream,
    header: HeaderKind,
    outbox: &Outbox<Q>,
    mut handle: impl FnMut(u16, &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    let mut head = vec![0u8; header.size()];
    let mut body = Vec::new();
    loop {
        if let Err(e) = stream.read_exact(&mut head) {
            return closed_or(e, outbox);
        }
        let (msg_type, size, sub_list) = header.decode(&head).map_err(|_| "bad header")?;
        if size > MAX_CLIENT_MSG {
            return Err(format!(
                "message type {msg_type} of {size} bytes is too large"
            ));
        }
        if sub_list != 0 {
            return Err(format!(
                "message type {msg_type} carries a sub-message list"
            ));
        }
        body.resize(size as usize, 0);
        if let Err(e) = stream.read_exact(&mut body) {
            return closed_or(e, outbox).and(Err("truncated message".into()));
        }
        match msg_type {
            MSGC_ACK_SYNC => outbox.on_ack_sync(),
            MSGC_ACK => outbox.on_ack(),
            MSGC_PONG => {
                let id = Reader::new(&body).u32().map_err(|_| "short PONG")?;
                outbox.on_pong(id);
            }
            MSGC_MIGRATE_FLUSH_MARK | MSGC_MIGRATE_DATA => {}
            MSGC_DISCONNECTING => return Ok(()),
            _ => handle(msg_type, &body)?,
        }
    }
}

/// A read error: expected when we closed the channel or the client went away at a message
/// boundary, worth a log line otherwise.
fn closed_or<Q: Queue>(e: io::Error, outbox: &Outbox<Q>) -> Result<(), String> {
    if outbox.is_closed() || e.kind() == io::ErrorKind::UnexpectedEof {
        Ok(())
    } else {
        Err(format!("read failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_queue_is_bounded() {
        let mut q = SmallQueue::default();
        for _ in 0..MAX_SMALL_QUEUE {
            q.push(OutMsg::new(1, vec![])).unwrap();
        }
        assert!(q.push(OutMsg::new(1, vec![])).is_err());
        assert_eq!(q.pop(), Some(OutMsg::new(1, vec![])));
    }

    #[test]
    fn ack_window_blocks_after_two_windows_until_acked() {
        let outbox = Outbox::new(SmallQueue::default());
        outbox.lock().ack.enabled = true;
        for _ in 0..3 * ACK_WINDOW {
            outbox.with(|q| q.push(OutMsg::new(7, vec![]))).unwrap();
        }
        let mut next_ping = Instant::now() + PING_INTERVAL;
        for _ in 0..2 * ACK_WINDOW {
            assert!(matches!(outbox.next(&mut next_ping), Next::Send(_)));
        }
        assert!(!outbox.lock().ack.can_send());

        // An ACK before ACK_SYNC does not count.
        outbox.on_ack();
        outbox.on_ack_sync();
        assert!(!outbox.lock().ack.can_send());
        outbox.on_ack();
        assert_eq!(outbox.lock().ack.unacked, ACK_WINDOW);
        for _ in 0..ACK_WINDOW {
            assert!(matches!(outbox.next(&mut next_ping), Next::Send(_)));
        }
        assert!(!outbox.lock().ack.can_send());
    }

    #[test]
    fn ping_is_sent_when_due_and_cleared_by_its_pong() {
        let outbox = Outbox::new(SmallQueue::default());
        let mut next_ping = Instant::now();
        let Next::Send(msg) = outbox.next(&mut next_ping) else {
            panic!("expected a ping");
        };
        assert_eq!(msg.msg_type, MSG_PING);
        assert_eq!(&msg.body[..4], &[1, 0, 0, 0]);
        assert_eq!(msg.body.len(), 12);
        outbox.on_pong(2);
        assert!(outbox.lock().ping.is_some());
        outbox.on_pong(1);
        assert!(outbox.lock().ping.is_none());
    }
}
