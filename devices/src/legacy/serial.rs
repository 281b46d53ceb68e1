// SPDX-License-Identifier: Apache-2.0
//! The COM1 16550 UART, on top of vm-superio's register model.
//!
//! What the guest transmits goes into a bounded [`SerialOutput`] queue that a separate writer
//! thread drains into the terminal or file. The vCPU that writes the transmit register only
//! copies a byte into that queue, so a slow, stopped or hung-up terminal never blocks the
//! guest: once the queue is full, further output is dropped and counted.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vm_superio::serial::SerialEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;
use crate::Interrupt;

/// Bytes of guest output held while the writer thread catches up.
pub const SERIAL_OUTPUT_CAPACITY: usize = 256 * 1024;

struct OutputQueue {
    bytes: VecDeque<u8>,
    dropped: u64,
    closed: bool,
}

/// A bounded queue of bytes between the UART (vCPU side) and the output writer thread.
pub struct SerialOutput {
    queue: Mutex<OutputQueue>,
    ready: Condvar,
    capacity: usize,
}

impl SerialOutput {
    /// Creates a queue holding at most `capacity` bytes; its memory is allocated here, once.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(SerialOutput {
            queue: Mutex::new(OutputQueue {
                bytes: VecDeque::with_capacity(capacity),
                dropped: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            capacity,
        })
    }

    fn lock(&self) -> MutexGuard<'_, OutputQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `data`, dropping what does not fit. Never blocks on I/O and never allocates.
    pub fn push(&self, data: &[u8]) {
        let mut queue = self.lock();
        if queue.closed {
            queue.dropped += data.len() as u64;
            return;
        }

        let room = self.capacity - queue.bytes.len();
        let taken = data.len().min(room);
        queue.bytes.extend(&data[..taken]);
        queue.dropped += (data.len() - taken) as u64;
        drop(queue);

        if taken > 0 {
            self.ready.notify_one();
        }
    }

    /// Waits up to `timeout` for queued bytes and moves them into `out` (cleared first).
    /// Returns false once the queue is closed and empty.
    pub fn take(&self, out: &mut Vec<u8>, timeout: Duration) -> bool {
        out.clear();
        let queue = self.lock();
        let (mut queue, _) = self
            .ready
            .wait_timeout_while(queue, timeout, |q| q.bytes.is_empty() && !q.closed)
            .unwrap_or_else(|e| e.into_inner());

        out.extend(queue.bytes.drain(..));
        !(queue.closed && out.is_empty())
    }

    /// Stops accepting output (the writer is gone): queued and future bytes are dropped.
    pub fn close(&self) {
        let mut queue = self.lock();
        queue.closed = true;
        queue.dropped += queue.bytes.len() as u64;
        queue.bytes.clear();
        drop(queue);
        self.ready.notify_all();
    }

    /// Returns how many bytes were dropped because the queue was full or closed.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Waits until the writer has taken everything queued, or until `timeout` passes.
    pub fn wait_empty(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let queue = self.lock();
            if queue.bytes.is_empty() || queue.closed {
                return true;
            }
            drop(queue);
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

/// The [`io::Write`] end that the UART model transmits into.
struct OutputWriter(Arc<SerialOutput>);

impl io::Write for OutputWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Adapts an [`Interrupt`] to vm-superio's trigger.
struct IrqTrigger(Arc<dyn Interrupt>);

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.trigger()
    }
}

/// Tells the input side when the guest has drained the receive FIFO, so that input held back
/// while the FIFO was full can be offered again.
pub struct SerialInputEvents {
    fifo_empty_evt: EventFd,
}

impl SerialInputEvents {
    /// Creates the events around `fifo_empty_evt`, which is written when the FIFO empties.
    pub fn new(fifo_empty_evt: EventFd) -> Self {
        SerialInputEvents { fifo_empty_evt }
    }
}

impl SerialEvents for SerialInputEvents {
    fn buffer_read(&self) {}

    fn out_byte(&self) {}

    fn tx_lost_byte(&self) {}

    fn in_buffer_empty(&self) {
        // An eventfd write only fails when its counter would overflow, and then the reader
        // is already due to wake up.
        let _ = self.fifo_empty_evt.write(1);
    }
}

/// A 16550A UART on eight consecutive ports (COM1 is 0x3f8, IRQ 4).
pub struct SerialDevice {
    uart: Serial<IrqTrigger, SerialInputEvents, OutputWriter>,
}

impl SerialDevice {
    /// Creates a UART that raises `irq` and transmits into `output`.
    pub fn new(
        irq: Arc<dyn Interrupt>,
        events: SerialInputEvents,
        output: Arc<SerialOutput>,
    ) -> Self {
        let uart = Serial::with_events(IrqTrigger(irq), events, OutputWriter(output));
        SerialDevice { uart }
    }

    /// Returns how many bytes the receive FIFO can take now.
    pub fn input_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Puts `input` into the receive FIFO and returns how many bytes it took.
    pub fn enqueue_input(&mut self, input: &[u8]) -> usize {
        let room = self.uart.fifo_capacity().min(input.len());
        if room == 0 {
            return 0;
        }

        match self.uart.enqueue_raw_bytes(&input[..room]) {
            Ok(n) => n,
            Err(e) => {
                log::debug!("serial: could not raise the receive interrupt: {e:?}");
                room
            }
        }
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        // The UART has byte-wide registers only; wider reads see an absent register.
        match (data.len(), u8::try_from(offset)) {
            (1, Ok(offset)) => data[0] = self.uart.read(offset),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let (1, Ok(offset)) = (data.len(), u8::try_from(offset)) else {
            return;
        };

        if let Err(e) = self.uart.write(offset, data[0]) {
            log::debug!("serial: write to register {offset} failed: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Default)]
    struct CountingIrq(AtomicUsize);

    impl Interrupt for CountingIrq {
        fn trigger(&self) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn uart(capacity: usize) -> (SerialDevice, Arc<SerialOutput>, Arc<CountingIrq>, EventFd) {
        let irq = Arc::new(CountingIrq::default());
        let evt = EventFd::new(libc_nonblock()).unwrap();
        let events = SerialInputEvents::new(evt.try_clone().unwrap());
        let output = SerialOutput::new(capacity);
        (
            SerialDevice::new(irq.clone(), events, output.clone()),
            output,
            irq,
            evt,
        )
    }

    fn libc_nonblock() -> i32 {
        vmm_sys_util::eventfd::EFD_NONBLOCK
    }

    #[test]
    fn transmitted_bytes_reach_the_output_queue() {
        let (mut dev, output, _, _) = uart(16);
        for b in b"hi\n" {
            dev.write(0x3f8, 0, &[*b]);
        }

        let mut out = Vec::new();
        assert!(output.take(&mut out, Duration::from_millis(10)));
        assert_eq!(out, b"hi\n");
    }

    #[test]
    fn a_full_queue_drops_output_instead_of_blocking() {
        let (mut dev, output, _, _) = uart(4);
        for b in b"abcdefgh" {
            dev.write(0x3f8, 0, &[*b]);
        }

        assert_eq!(output.dropped(), 4);
        let mut out = Vec::new();
        output.take(&mut out, Duration::ZERO);
        assert_eq!(out, b"abcd");
    }

    #[test]
    fn a_closed_queue_drops_everything_and_wakes_the_writer() {
        let output = SerialOutput::new(8);
        output.push(b"ab");
        output.close();
        output.push(b"cd");

        let mut out = Vec::new();
        assert!(!output.take(&mut out, Duration::from_secs(5)));
        assert_eq!(output.dropped(), 4);
    }

    #[test]
    fn input_fills_the_fifo_raises_rx_interrupt_and_signals_when_drained() {
        let (mut dev, _, irq, evt) = uart(16);
        // IER: enable the received-data interrupt.
        dev.write(0x3f8, 1, &[0x01]);
        let before = irq.0.load(Ordering::SeqCst);

        let many = [b'x'; 100];
        let taken = dev.enqueue_input(&many);
        assert_eq!(taken, 64, "a 16550A FIFO holds 64 bytes here");
        assert_eq!(dev.enqueue_input(b"y"), 0);
        assert!(irq.0.load(Ordering::SeqCst) > before);

        let mut data = [0u8];
        for _ in 0..64 {
            dev.read(0x3f8, 0, &mut data);
            assert_eq!(data[0], b'x');
        }
        assert_eq!(evt.read().unwrap(), 1);
        assert_eq!(dev.input_capacity(), 64);
    }

    #[test]
    fn wide_accesses_are_ignored() {
        let (mut dev, output, _, _) = uart(16);
        let mut data = [0u8; 2];
        dev.read(0x3f8, 5, &mut data);
        assert_eq!(data, [0xff, 0xff]);
        dev.write(0x3f8, 0, &[1, 2]);
        assert_eq!(output.dropped(), 0);
        let mut out = Vec::new();
        output.take(&mut out, Duration::ZERO);
        assert!(out.is_empty());
    }
}
