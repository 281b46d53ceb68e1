// SPDX-License-Identifier: Apache-2.0
//! ACPI power management registers of a hardware-reduced ACPI platform.
//!
//! The FADT points the guest at the sleep control and status registers here (ACPI 6.5,
//! section 4.8.3.7). Linux writes `SLP_TYPx << 2 | SLP_EN` to the control register to enter a
//! sleep state; the type for S5 (soft off) comes from the DSDT's `\_S5_` package, which the VMM
//! writes with [`S5_SLEEP_TYPE`].

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::{ExitRequest, VmExitRequester};

/// I/O port of the sleep control register; the sleep status register follows it.
pub const SLEEP_CONTROL_PORT: u16 = 0x600;
/// Ports taken by the two registers.
pub const PM_PORTS_LEN: u8 = 2;
/// The SLP_TYP value announced for S5 in the DSDT.
pub const S5_SLEEP_TYPE: u8 = 5;

/// Sleep control register: SLP_TYPx, bits 2-4.
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7;
/// Sleep control register: SLP_EN, bit 5.
const SLP_EN: u8 = 1 << 5;

/// The sleep control and status registers.
pub struct AcpiPmDevice {
    vm: Arc<dyn VmExitRequester>,
}

impl AcpiPmDevice {
    /// Creates the registers; entering S5 asks `vm` to power off.
    pub fn new(vm: Arc<dyn VmExitRequester>) -> Self {
        AcpiPmDevice { vm }
    }
}

impl BusDevice for AcpiPmDevice {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        // No wake events exist, so the status register (WAK_STS and the rest) reads 0.
        data.fill(0);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let (0, [value]) = (offset, data) else {
            return;
        };

        let sleep_type = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
        if value & SLP_EN != 0 && sleep_type == S5_SLEEP_TYPE {
            self.vm.request_exit(ExitRequest::PowerOff);
        } else if value & SLP_EN != 0 {
            log::warn!("acpi: guest asked for sleep type {sleep_type}, which is not offered");
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
    fn only_slp_en_with_the_s5_type_powers_off() {
        let requests = Arc::new(Requests::default());
        let mut pm = AcpiPmDevice::new(requests.clone());

        pm.write(0x600, 0, &[5 << 2]);
        pm.write(0x600, 0, &[(3 << 2) | SLP_EN]);
        pm.write(0x600, 1, &[(5 << 2) | SLP_EN]);
        pm.write(0x600, 0, &[(5 << 2) | SLP_EN, 0]);
        assert!(requests.0.lock().unwrap().is_empty());

        pm.write(0x600, 0, &[(5 << 2) | SLP_EN]);
        assert_eq!(*requests.0.lock().unwrap(), vec![ExitRequest::PowerOff]);
    }

    #[test]
    fn status_reads_zero() {
        let mut pm = AcpiPmDevice::new(Arc::new(Requests::default()));
        let mut data = [0xff];
        pm.read(0x600, 1, &mut data);
        assert_eq!(data, [0]);
    }
}
