// SPDX-License-Identifier: Apache-2.0
//! The MSI capability (PCI 3.0, section 6.8.1) in its 64-bit form with per-vector masking,
//! for one vector, and the interrupt a PCI function raises through it or through INTx.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use vmm_sys_util::eventfd::EventFd;

use super::configuration::{PciConfiguration, COMMAND_INTX_DISABLE};

/// Capability ID of MSI.
pub const MSI_CAPABILITY_ID: u8 = 0x05;
/// Message control: MSI enable.
const CONTROL_ENABLE: u16 = 1 << 0;
/// Message control: 64-bit address capable.
const CONTROL_64BIT: u16 = 1 << 7;
/// Message control: per-vector masking capable.
const CONTROL_MASKABLE: u16 = 1 << 8;
/// Capability length in dwords: header/control, address low, address high, data, mask,
/// pending.
const CAPABILITY_DWORDS: usize = 6;

/// Programs the interrupt routing behind an MSI vector; implemented by the VMM with a KVM
/// GSI route.
pub trait MsiRouter: Send + Sync {
    /// Points the vector's interrupt at `address`/`data`.
    fn set_msi_route(&self, address: u64, data: u32) -> io::Result<()>;
}

/// The guest-visible state of the capability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiMessage {
    /// MSI enable bit.
    pub enabled: bool,
    /// Vector 0 mask bit.
    pub masked: bool,
    /// Message address.
    pub address: u64,
    /// Message data.
    pub data: u16,
}

/// Where the MSI capability sits in a configuration space.
#[derive(Clone, Copy, Debug)]
pub struct MsiCapability {
    /// Dword index of the capability's first register.
    reg: usize,
}

impl MsiCapability {
    /// Appends the capability to `config`.
    pub fn add_to(config: &mut PciConfiguration) -> Self {
        let control = CONTROL_64BIT | CONTROL_MASKABLE;
        let mut body = vec![0u8; CAPABILITY_DWORDS * 4 - 2];
        body[..2].copy_from_slice(&control.to_le_bytes());
        let writable = [
            u32::from(CONTROL_ENABLE) << 16,
            0xffff_fffc,
            0xffff_ffff,
            0x0000_ffff,
            0x0000_0001,
            0,
        ];
        let offset = config.add_capability(MSI_CAPABILITY_ID, &body, &writable);
        MsiCapability { reg: offset / 4 }
    }

    /// Returns whether configuration register `reg` belongs to the capability.
    pub fn covers(&self, reg: usize) -> bool {
        (self.reg..self.reg + CAPABILITY_DWORDS).contains(&reg)
    }

    /// Reads the capability's current state.
    pub fn message(&self, config: &PciConfiguration) -> MsiMessage {
        let control = config.read_register(self.reg) >> 16;
        let low = config.read_register(self.reg + 1);
        let high = config.read_register(self.reg + 2);
        MsiMessage {
            enabled: control & u32::from(CONTROL_ENABLE) != 0,
            masked: config.read_register(self.reg + 4) & 1 != 0,
            address: u64::from(high) << 32 | u64::from(low),
            data: (config.read_register(self.reg + 3) & 0xffff) as u16,
        }
    }

    /// Dword index of the pending-bits register.
    pub fn pending_reg(&self) -> usize {
        self.reg + 5
    }
}

/// The interrupt of a PCI function: MSI when the guest enabled it, INTx otherwise.
///
/// INTx is level-triggered, through a KVM irqfd with a resample event: [`raise`] asserts the
/// line, KVM lowers it when the guest acknowledges it and signals the resample event, and the
/// device then calls [`raise`] again if its interrupt condition still holds.
///
/// [`raise`]: PciInterrupt::raise
pub struct PciInterrupt {
    msi_evt: EventFd,
    intx_evt: EventFd,
    router: Box<dyn MsiRouter>,
    msi_enabled: AtomicBool,
    msi_masked: AtomicBool,
    msi_pending: AtomicBool,
    intx_disabled: AtomicBool,
    /// The message last routed, to reprogram only on change.
    routed: Mutex<Option<(u64, u32)>>,
}

impl PciInterrupt {
    /// Creates the interrupt from the MSI irqfd, the INTx irqfd and the MSI router.
    pub fn new(msi_evt: EventFd, intx_evt: EventFd, router: Box<dyn MsiRouter>) -> Self {
        PciInterrupt {
            msi_evt,
            intx_evt,
            router,
            msi_enabled: AtomicBool::new(false),
            msi_masked: AtomicBool::new(false),
            msi_pending: AtomicBool::new(false),
            intx_disabled: AtomicBool::new(false),
            routed: Mutex::new(None),
        }
    }

    /// Returns whether MSI is in use.
    pub fn msi_enabled(&self) -> bool {
        self.msi_enabled.load(Ordering::Acquire)
    }

    /// Raises the interrupt once (an MSI) or asserts the INTx line.
    pub fn raise(&self) -> io::Result<()> {
        if self.msi_enabled.load(Ordering::Acquire) {
            if self.msi_masked.load(Ordering::Acquire) {
                self.msi_pending.store(true, Ordering::Release);
                return Ok(());
            }
            return self.msi_evt.write(1);
        }

        if self.intx_disabled.load(Ordering::Acquire) {
            return Ok(());
        }
        self.intx_evt.write(1)
    }

    /// Applies the guest's MSI and command register settings after a configuration write;
    /// delivers an MSI that was held back while masked. Returns whether a message is pending
    /// (for the capability's pending bit).
    pub fn update(&self, message: MsiMessage, command: u16) -> io::Result<bool> {
        self.intx_disabled
            .store(command & COMMAND_INTX_DISABLE != 0, Ordering::Release);

        if message.enabled {
            let route = (message.address, u32::from(message.data));
            let mut routed = self.routed.lock().unwrap_or_else(|e| e.into_inner());
            if *routed != Some(route) {
                self.router.set_msi_route(route.0, route.1)?;
                *routed = Some(route);
            }
        }

        self.msi_masked.store(message.masked, Ordering::Release);
        self.msi_enabled.store(message.enabled, Ordering::Release);
        if message.enabled && !message.masked && self.msi_pending.swap(false, Ordering::AcqRel) {
            self.msi_evt.write(1)?;
        }
        Ok(self.msi_pending.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    use super::*;

    #[derive(Default)]
    struct Routes(Mutex<Vec<(u64, u32)>>);

    impl MsiRouter for Arc<Routes> {
        fn set_msi_route(&self, address: u64, data: u32) -> io::Result<()> {
            self.0.lock().unwrap().push((address, data));
            Ok(())
        }
    }

    fn evt() -> EventFd {
        EventFd::new(EFD_NONBLOCK).unwrap()
    }

    fn interrupt() -> (PciInterrupt, EventFd, EventFd, Arc<Routes>) {
        let (msi, intx) = (evt(), evt());
        let routes = Arc::new(Routes::default());
        let irq = PciInterrupt::new(
            msi.try_clone().unwrap(),
            intx.try_clone().unwrap(),
            Box::new(routes.clone()),
        );
        (irq, msi, intx, routes)
    }

    #[test]
    fn capability_layout_and_message() {
        let mut cfg = PciConfiguration::new(1, 2, 0, 0);
        let cap = MsiCapability::add_to(&mut cfg);
        assert_eq!(
            cfg.read_register(0x40 / 4),
            0x0180_0005,
            "64-bit, maskable, disabled"
        );
        assert!(cap.covers(0x40 / 4) && cap.covers(0x54 / 4) && !cap.covers(0x58 / 4));

        cfg.write_register(0x44 / 4, 0, &0xfee0_1004u32.to_le_bytes());
        cfg.write_register(0x48 / 4, 0, &1u32.to_le_bytes());
        cfg.write_register(0x4c / 4, 0, &0xdead_0041u32.to_le_bytes());
        cfg.write_register(0x40 / 4, 2, &0xffffu16.to_le_bytes());
        let message = cap.message(&cfg);
        assert_eq!(
            message,
            MsiMessage {
                enabled: true,
                masked: false,
                address: 0x1_fee0_1004,
                data: 0x41
            }
        );
        assert_eq!(
            cfg.read_register(0x40 / 4) >> 16,
            0x0181,
            "only the enable bit is writable"
        );
    }

    #[test]
    fn intx_until_msi_is_enabled_then_msi() {
        let (irq, msi, intx, routes) = interrupt();
        irq.raise().unwrap();
        assert_eq!(intx.read().unwrap(), 1);
        assert!(msi.read().is_err());

        let message = MsiMessage {
            enabled: true,
            masked: false,
            address: 0xfee0_0000,
            data: 0x30,
        };
        irq.update(message, 0).unwrap();
        irq.update(message, 0).unwrap();
        assert_eq!(
            *routes.0.lock().unwrap(),
            vec![(0xfee0_0000, 0x30)],
            "routed once"
        );
        irq.raise().unwrap();
        assert_eq!(msi.read().unwrap(), 1);
        assert!(intx.read().is_err());
    }

    #[test]
    fn a_masked_vector_holds_the_message_until_unmasked() {
        let (irq, msi, _, _) = interrupt();
        let masked = MsiMessage {
            enabled: true,
            masked: true,
            address: 0xfee0_0000,
            data: 0x30,
        };
        irq.update(masked, 0).unwrap();
        irq.raise().unwrap();
        assert!(msi.read().is_err());
        assert!(irq.update(masked, 0).unwrap(), "pending while masked");

        assert!(!irq
            .update(
                MsiMessage {
                    masked: false,
                    ..masked
                },
                0
            )
            .unwrap());
        assert_eq!(msi.read().unwrap(), 1);
    }

    #[test]
    fn intx_disable_silences_the_line() {
        let (irq, _, intx, _) = interrupt();
        irq.update(MsiMessage::default(), COMMAND_INTX_DISABLE)
            .unwrap();
        irq.raise().unwrap();
        assert!(intx.read().is_err());
    }
}
