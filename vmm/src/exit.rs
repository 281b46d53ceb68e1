// SPDX-License-Identifier: Apache-2.0
//! Why the VM stopped, recorded by whichever thread saw it first and read by the main thread.

use std::sync::Mutex;

use devices::{ExitRequest, VmExitRequester};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The reason the VM stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmStop {
    /// The guest asked to stop (power off or reset).
    Guest(ExitRequest),
    /// The user pressed the quit key on the serial console.
    UserQuit,
    /// A vCPU hit an error it cannot continue from.
    VcpuFailed(String),
}

/// The first stop reason and an event that wakes the main loop when it is set.
pub struct VmExit {
    reason: Mutex<Option<VmStop>>,
    /// Readable once a reason has been recorded.
    pub exit_evt: EventFd,
}

impl VmExit {
    /// Creates an exit with no reason yet.
    pub fn new() -> std::io::Result<Self> {
        Ok(VmExit {
            reason: Mutex::new(None),
            exit_evt: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// Records `stop` unless a reason is already set, and wakes the main loop.
    pub fn stop(&self, stop: VmStop) {
        let mut reason = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        reason.get_or_insert(stop);
        drop(reason);
        // The counter cannot overflow with one write per stop.
        let _ = self.exit_evt.write(1);
    }

    /// Returns the recorded reason.
    pub fn reason(&self) -> Option<VmStop> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl VmExitRequester for VmExit {
    fn request_exit(&self, request: ExitRequest) {
        self.stop(VmStop::Guest(request));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_wins_and_wakes_the_loop() {
        let exit = VmExit::new().unwrap();
        assert_eq!(exit.reason(), None);

        exit.request_exit(ExitRequest::PowerOff);
        exit.stop(VmStop::VcpuFailed("late".into()));
        assert_eq!(exit.reason(), Some(VmStop::Guest(ExitRequest::PowerOff)));
        assert_eq!(exit.exit_evt.read().unwrap(), 2);
    }
}
