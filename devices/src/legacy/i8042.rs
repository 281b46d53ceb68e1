// SPDX-License-Identifier: Apache-2.0
//! The i8042 keyboard controller, for the one command a guest needs from it today: pulsing
//! the CPU reset line (command 0xfe on port 0x64), which Linux uses to reboot.

use std::sync::Arc;

use vm_superio::{I8042Device, Trigger};

use crate::bus::BusDevice;
use crate::{ExitRequest, VmExitRequester};

/// Adapts the reset line to vm-superio's trigger.
struct ResetLine(Arc<dyn VmExitRequester>);

impl Trigger for ResetLine {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.request_exit(ExitRequest::Reset);
        Ok(())
    }
}

/// An i8042 on ports 0x60 (data) to 0x64 (status and command).
///
/// TODO: the keyboard and mouse ports are not emulated yet; every read returns 0, so the
/// guest's i8042 driver finds no controller and only the reset command is served.
pub struct I8042 {
    device: I8042Device<ResetLine>,
}

impl I8042 {
    /// Creates the controller; the reset command asks `vm` to reset the machine.
    pub fn new(vm: Arc<dyn VmExitRequester>) -> Self {
        I8042 {
            device: I8042Device::new(ResetLine(vm)),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let value = u8::try_from(offset).map_or(0xff, |offset| self.device.read(offset));
        data.fill(value);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        if let (1, Ok(offset)) = (data.len(), u8::try_from(offset)) {
            let Ok(()) = self.device.write(offset, data[0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Requests(Mutex<Vec<ExitRequest>>);

    impl VmExitRequester for Requests {
        fn request_exit(&self, request: ExitRequest) {
            self.0.lock().unwrap().push(request);
        }
    }

    #[test]
    fn command_0xfe_on_port_0x64_resets_the_machine() {
        let requests = Arc::new(Requests::default());
        let mut i8042 = I8042::new(requests.clone());

        i8042.write(0x60, 0, &[0xfe]);
        i8042.write(0x60, 4, &[0xfd]);
        assert!(requests.0.lock().unwrap().is_empty());

        i8042.write(0x60, 4, &[0xfe]);
        assert_eq!(*requests.0.lock().unwrap(), vec![ExitRequest::Reset]);
    }
}
