// SPDX-License-Identifier: Apache-2.0
//! The VM's interrupt routing: which GSI reaches which interrupt controller pin, and which
//! GSIs are MSI messages.
//!
//! KVM replaces the whole table on every update, so the table is kept here: the PC's default
//! routes (GSIs 0-15 to both PICs and the IOAPIC, 16-23 to the IOAPIC) plus one route per MSI
//! vector. An update happens only when a guest programs an MSI capability.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use devices::pci::MsiRouter;
use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;

use crate::arch::layout::IOAPIC_PINS;

/// Sets the routing table; a trait so that the table logic is tested without KVM.
pub trait RoutingSink: Send + Sync {
    /// Replaces the VM's routing table with `entries`.
    fn set_routes(&self, entries: &[kvm_irq_routing_entry]) -> io::Result<()>;
}

impl RoutingSink for VmFd {
    fn set_routes(&self, entries: &[kvm_irq_routing_entry]) -> io::Result<()> {
        let table = KvmIrqRouting::from_entries(entries)
            .map_err(|e| io::Error::other(format!("routing table: {e:?}")))?;
        self.set_gsi_routing(&table)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
}

/// The routing table and the allocator of MSI GSIs.
pub struct IrqRouting {
    sink: Arc<dyn RoutingSink>,
    msi: Mutex<MsiRoutes>,
}

struct MsiRoutes {
    next_gsi: u32,
    routes: BTreeMap<u32, (u64, u32)>,
}

fn irqchip_entry(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut entry = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    entry.u.irqchip.irqchip = chip;
    entry.u.irqchip.pin = pin;
    entry
}

#[allow(clippy::cast_possible_truncation)] // The address is split into register halves.
fn msi_entry(gsi: u32, address: u64, data: u32) -> kvm_irq_routing_entry {
    let mut entry = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    entry.u.msi.address_lo = (address & 0xffff_ffff) as u32;
    entry.u.msi.address_hi = (address >> 32) as u32;
    entry.u.msi.data = data;
    entry
}

/// The routes KVM sets up by default for a PC: ISA IRQs to both PICs and the IOAPIC, the
/// rest of the IOAPIC pins alone.
pub fn default_routes() -> Vec<kvm_irq_routing_entry> {
    let mut entries = Vec::new();
    for gsi in 0..IOAPIC_PINS {
        if gsi < 16 {
            let chip = if gsi < 8 {
                KVM_IRQCHIP_PIC_MASTER
            } else {
                KVM_IRQCHIP_PIC_SLAVE
            };
            entries.push(irqchip_entry(gsi, chip, gsi % 8));
        }
        entries.push(irqchip_entry(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    }
    entries
}

impl IrqRouting {
    /// Creates the table around `sink`; MSI GSIs are allocated after the IOAPIC's pins.
    pub fn new(sink: Arc<dyn RoutingSink>) -> Arc<Self> {
        let msi = MsiRoutes {
            next_gsi: IOAPIC_PINS,
            routes: BTreeMap::new(),
        };
        Arc::new(IrqRouting {
            sink,
            msi: Mutex::new(msi),
        })
    }

    /// Reserves a GSI for an MSI vector (routed once the guest programs it).
    pub fn allocate_msi_gsi(&self) -> u32 {
        let mut msi = self.msi.lock().unwrap_or_else(|e| e.into_inner());
        let gsi = msi.next_gsi;
        msi.next_gsi += 1;
        gsi
    }

    /// Routes `gsi` to the MSI message `address`/`data` and updates KVM.
    pub fn set_msi(&self, gsi: u32, address: u64, data: u32) -> io::Result<()> {
        let mut msi = self.msi.lock().unwrap_or_else(|e| e.into_inner());
        msi.routes.insert(gsi, (address, data));

        let mut entries = default_routes();
        entries.extend(
            msi.routes
                .iter()
                .map(|(gsi, (a, d))| msi_entry(*gsi, *a, *d)),
        );
        self.sink.set_routes(&entries)
    }

    /// Returns an [`MsiRouter`] for the vector at `gsi`.
    pub fn msi_router(self: &Arc<Self>, gsi: u32) -> Box<dyn MsiRouter> {
        Box::new(GsiMsiRouter {
            routing: self.clone(),
            gsi,
        })
    }
}

struct GsiMsiRouter {
    routing: Arc<IrqRouting>,
    gsi: u32,
}

impl MsiRouter for GsiMsiRouter {
    fn set_msi_route(&self, address: u64, data: u32) -> io::Result<()> {
        self.routing.set_msi(self.gsi, address, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Vec<kvm_irq_routing_entry>>>);

    impl RoutingSink for Recorder {
        fn set_routes(&self, entries: &[kvm_irq_routing_entry]) -> io::Result<()> {
            self.0.lock().unwrap().push(entries.to_vec());
            Ok(())
        }
    }

    #[test]
    fn default_routes_match_a_pc() {
        let routes = default_routes();
        assert_eq!(routes.len(), 16 * 2 + 8);
        // SAFETY: irqchip entries carry the irqchip member.
        let pins: Vec<(u32, u32, u32)> = routes
            .iter()
            .map(|e| unsafe { (e.gsi, e.u.irqchip.irqchip, e.u.irqchip.pin) })
            .collect();
        assert!(pins.contains(&(4, KVM_IRQCHIP_PIC_MASTER, 4)));
        assert!(pins.contains(&(12, KVM_IRQCHIP_PIC_SLAVE, 4)));
        assert!(pins.contains(&(12, KVM_IRQCHIP_IOAPIC, 12)));
        assert!(pins.contains(&(23, KVM_IRQCHIP_IOAPIC, 23)));
    }

    #[test]
    fn msi_routes_are_added_to_the_defaults() {
        let sink = Arc::new(Recorder::default());
        let routing = IrqRouting::new(sink.clone());
        let gsi = routing.allocate_msi_gsi();
        assert_eq!(gsi, 24);
        assert_eq!(routing.allocate_msi_gsi(), 25);

        routing
            .msi_router(gsi)
            .set_msi_route(0x1_fee0_0000, 0x4041)
            .unwrap();
        let tables = sink.0.lock().unwrap();
        let last = tables.last().unwrap();
        assert_eq!(last.len(), 41);
        let msi = last.last().unwrap();
        assert_eq!((msi.gsi, msi.type_), (24, KVM_IRQ_ROUTING_MSI));
        // SAFETY: MSI entries carry the msi member.
        let (lo, hi, data) =
            unsafe { (msi.u.msi.address_lo, msi.u.msi.address_hi, msi.u.msi.data) };
        assert_eq!((lo, hi, data), (0xfee0_0000, 1, 0x4041));
    }
}
