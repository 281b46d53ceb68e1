// SPDX-License-Identifier: Apache-2.0
//! Device models of the vmm.
//!
//! Every device here is driven by two kinds of callers: a vCPU thread, through the [`bus::Bus`]
//! on a port or MMIO exit, and the VMM's own threads (the event loop feeding serial input, for
//! example). Each device sits behind its own lock and nothing here performs blocking I/O while
//! holding it, so a vCPU never waits for a terminal, a file or a socket. The crate opens no
//! sockets and knows nothing of KVM: interrupts leave through [`Interrupt`] implementations.

#![deny(missing_docs)]

pub mod acpi;
pub mod bus;
pub mod legacy;
pub mod log_limit;
pub mod pci;
pub mod qxl;

use std::io;

use vmm_sys_util::eventfd::EventFd;

/// A line or message interrupt that a device can raise.
///
/// The VMM backs this with an irqfd, so raising it is one `eventfd` write that KVM turns into
/// an interrupt without any lock in user space.
pub trait Interrupt: Send + Sync {
    /// Raises the interrupt (an edge, or one assertion of a level line).
    fn trigger(&self) -> io::Result<()>;
}

/// An [`Interrupt`] that writes to an [`EventFd`], normally registered as a KVM irqfd.
#[derive(Debug)]
pub struct EventFdInterrupt(EventFd);

impl EventFdInterrupt {
    /// Wraps `evt`.
    pub fn new(evt: EventFd) -> Self {
        EventFdInterrupt(evt)
    }

    /// Returns the event file descriptor, to register it with KVM.
    pub fn eventfd(&self) -> &EventFd {
        &self.0
    }
}

impl Interrupt for EventFdInterrupt {
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Why the guest wants the VMM to stop running it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitRequest {
    /// The guest powered off (ACPI S5).
    PowerOff,
    /// The guest reset the machine (i8042 reset line, triple fault, KVM reset event).
    Reset,
}

/// Receives the guest's requests to stop the machine.
///
/// Implementations must return at once: they are called on vCPU threads.
pub trait VmExitRequester: Send + Sync {
    /// Records `request` and wakes whoever stops the VM.
    fn request_exit(&self, request: ExitRequest);
}
