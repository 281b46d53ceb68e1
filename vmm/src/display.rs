// SPDX-License-Identifier: Apache-2.0
//! Puts a QXL display device on the PCI bus: its BAR memory, its KVM memory slots and irqfds,
//! and its display thread.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::bus::Bus;
use devices::log_limit::LogLimiter;
use devices::pci::{BarMapper, BarRegion, PciInterrupt, PciRoot};
use devices::qxl::regs::{
    QXL_DEFAULT_RAM_SIZE, QXL_DEFAULT_VRAM_SIZE, QXL_IO_NOTIFY_CMD, QXL_IO_NOTIFY_CURSOR,
    QXL_ROM_SIZE,
};
use devices::qxl::{
    build_rom, worker, QxlBarAddresses, QxlConfig, QxlEngine, QxlIo, QxlPci, QxlRom, QxlShared,
};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use thiserror::Error;
use vm_memory::mmap::MmapRegion;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::api::Screenshot;
use crate::arch::acpi::pci_intx_gsi;
use crate::arch::layout::{PCI_IO_START, PCI_MMIO32_START};
use crate::irq::IrqRouting;

/// KVM memory slots of the RAM and VRAM BARs (guest RAM takes the first slots).
const RAM_BAR_SLOT: u32 = 8;
const VRAM_BAR_SLOT: u32 = 9;

/// Errors creating the display device.
#[derive(Debug, Error)]
pub enum DisplayError {
    /// Host memory for a BAR could not be mapped.
    #[error("cannot allocate {0} MiB for a QXL BAR")]
    Memory(u64, #[source] vm_memory::mmap::MmapRegionError),
    /// An eventfd, irqfd or thread could not be created.
    #[error("cannot set up the QXL {0}")]
    Host(&'static str, #[source] std::io::Error),
    /// KVM refused an irqfd.
    #[error("cannot connect the QXL {0}")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
    /// The PCI bus is full.
    #[error("no free PCI slot for the QXL device")]
    NoSlot,
}

/// A running QXL device, as the control socket sees it.
pub struct DisplayHandle {
    /// State shared with the vCPU side, for statistics.
    pub shared: Arc<QxlShared>,
    worker: worker::QxlWorkerHandle,
    irq: Arc<PciInterrupt>,
}

impl DisplayHandle {
    /// Copies the primary surface, waiting at most `timeout` for the display thread.
    pub fn screenshot(&self, timeout: Duration) -> Result<Option<Screenshot>, String> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.worker.query(worker::DisplayQuery::Screenshot(reply));
        match answer.recv_timeout(timeout) {
            Ok(Some((info, pixels))) => Ok(Some(Screenshot {
                width: info.width,
                height: info.height,
                pixels,
            })),
            Ok(None) => Ok(None),
            Err(_) => Err(format!(
                "the display thread did not answer within {timeout:?}"
            )),
        }
    }

    /// Requests waiting for the display thread.
    pub fn queue_depth(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// Whether the guest enabled MSI.
    pub fn msi_enabled(&self) -> bool {
        self.irq.msi_enabled()
    }

    /// The engine's counters as JSON.
    pub fn engine_stats(&self) -> serde_json::Value {
        let stats = self
            .shared
            .engine_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        serde_json::json!({
            "commands": stats.commands,
            "cursor-commands": stats.cursor_commands,
            "drawables": stats.drawables.iter().sum::<u64>(),
            "drawables-by-type": stats.drawables.to_vec(),
            "unsupported-drawables": stats.unsupported_drawables,
            "errors": stats.guest_errors + stats.ring_errors,
            "releases": stats.releases,
            "surfaces-created": stats.surfaces_created,
            "resets": stats.resets,
            "raw-copy-rows": stats.raw_copy_rows,
            "masks-ignored": stats.masks_ignored,
        })
    }
}

/// Maps the QXL BARs into the guest as the guest programs them.
struct QxlBarMapper {
    vm: Arc<VmFd>,
    io_bus: Arc<Bus>,
    mmio_bus: Arc<Bus>,
    io: Arc<QxlIo>,
    rom: Arc<Mutex<QxlRom>>,
    ram: Arc<MmapRegion<()>>,
    vram: Arc<MmapRegion<()>>,
    shared: Arc<QxlShared>,
    /// The guest moves BARs at will: what goes wrong is logged at a bounded rate.
    warnings: Mutex<LogLimiter>,
}

impl QxlBarMapper {
    fn warn(&self, args: std::fmt::Arguments<'_>) {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .warn(args);
    }

    fn set_memory_slot(&self, slot: u32, addr: u64, region: Option<&MmapRegion<()>>) {
        let (size, host) = region.map_or((0, 0), |r| (r.size() as u64, r.as_ptr() as u64));
        let desc = kvm_userspace_memory_region {
            slot,
            guest_phys_addr: addr,
            memory_size: size,
            userspace_addr: host,
            flags: 0,
        };
        // SAFETY: the region is host memory owned by this mapper (through an Arc), which
        // lives as long as the VM; a size of 0 deletes the slot.
        if let Err(e) = unsafe { self.vm.set_user_memory_region(desc) } {
            self.warn(format_args!(
                "KVM refused BAR memory at {addr:#x}: {e}; the BAR is unusable"
            ));
        }
    }
}

impl BarMapper for QxlBarMapper {
    fn map_bar(&self, region: BarRegion) {
        log::debug!(
            "qxl: BAR {} at {:#x} ({:#x} bytes)",
            region.index,
            region.addr,
            region.size
        );
        let result = match region.index {
            0 => {
                self.shared.bar_addresses[0].store(region.addr, Ordering::Release);
                self.set_memory_slot(RAM_BAR_SLOT, region.addr, Some(&self.ram));
                Ok(())
            }
            1 => {
                self.shared.bar_addresses[1].store(region.addr, Ordering::Release);
                self.set_memory_slot(VRAM_BAR_SLOT, region.addr, Some(&self.vram));
                Ok(())
            }
            2 => self
                .mmio_bus
                .insert(self.rom.clone(), region.addr, region.size),
            _ => {
                self.notify_ioeventfds(region.addr, true);
                self.io_bus
                    .insert_shared(self.io.clone(), region.addr, region.size)
            }
        };
        if let Err(e) = result {
            self.warn(format_args!(
                "cannot map BAR {} at {:#x}: {e}",
                region.index, region.addr
            ));
        }
    }

    fn unmap_bar(&self, region: BarRegion) {
        match region.index {
            0 => self.set_memory_slot(RAM_BAR_SLOT, region.addr, None),
            1 => self.set_memory_slot(VRAM_BAR_SLOT, region.addr, None),
            2 => {
                self.mmio_bus.remove(region.addr);
            }
            _ => {
                self.notify_ioeventfds(region.addr, false);
                self.io_bus.remove(region.addr);
            }
        }
    }
}

impl QxlBarMapper {
    /// Lets KVM signal the notify ports' eventfds itself, so that these writes, the most
    /// frequent ones, never exit to the VMM.
    fn notify_ioeventfds(&self, io_base: u64, register: bool) {
        let ports = [
            (&self.shared.notify_cmd_evt, QXL_IO_NOTIFY_CMD),
            (&self.shared.notify_cursor_evt, QXL_IO_NOTIFY_CURSOR),
        ];
        for (evt, port) in ports {
            let addr = IoEventAddress::Pio(io_base + port);
            let result = if register {
                self.vm.register_ioevent(evt, &addr, NoDatamatch)
            } else {
                self.vm.unregister_ioevent(evt, &addr, NoDatamatch)
            };
            if let Err(e) = result {
                self.warn(format_args!(
                    "ioeventfd for port {port}: {e}; it exits to the VMM instead"
                ));
            }
        }
    }
}

fn bar_memory(size: u64) -> Result<Arc<MmapRegion<()>>, DisplayError> {
    let len = usize::try_from(size).expect("64-bit host");
    MmapRegion::new(len)
        .map(Arc::new)
        .map_err(|e| DisplayError::Memory(size >> 20, e))
}

/// Creates the QXL device, puts it in the next free slot of `pci` and starts its display
/// thread.
pub fn add_qxl(
    vm: &Arc<VmFd>,
    routing: &Arc<IrqRouting>,
    pci: &mut PciRoot,
    io_bus: &Arc<Bus>,
    mmio_bus: &Arc<Bus>,
    listener: Option<worker::Listener>,
) -> Result<DisplayHandle, DisplayError> {
    let host = |what| move |e| DisplayError::Host(what, e);
    let slot = pci.next_free_slot().ok_or(DisplayError::NoSlot)?;
    let intx_gsi = pci_intx_gsi(u32::from(slot), 0);

    let msi_evt = EventFd::new(EFD_NONBLOCK).map_err(host("MSI event"))?;
    let intx_evt = EventFd::new(EFD_NONBLOCK).map_err(host("INTx event"))?;
    let resample_evt = EventFd::new(EFD_NONBLOCK).map_err(host("INTx resample event"))?;
    let msi_gsi = routing.allocate_msi_gsi();
    vm.register_irqfd(&msi_evt, msi_gsi)
        .map_err(|e| DisplayError::Kvm("MSI irqfd", e))?;
    vm.register_irqfd_with_resample(&intx_evt, &resample_evt, intx_gsi)
        .map_err(|e| DisplayError::Kvm("INTx irqfd", e))?;
    let irq = Arc::new(PciInterrupt::new(
        msi_evt,
        intx_evt,
        routing.msi_router(msi_gsi),
    ));
    let irq_handle = irq.clone();

    let ram = bar_memory(QXL_DEFAULT_RAM_SIZE)?;
    let vram = bar_memory(QXL_DEFAULT_VRAM_SIZE)?;
    let (shared, requests) = QxlShared::new(ram.clone(), irq.clone()).map_err(host("queue"))?;
    let mut engine = QxlEngine::new(ram.clone(), vram.clone(), QxlConfig::default());
    engine.reset();

    let bars = QxlBarAddresses {
        ram: PCI_MMIO32_START,
        vram: PCI_MMIO32_START + QXL_DEFAULT_RAM_SIZE,
        rom: PCI_MMIO32_START + QXL_DEFAULT_RAM_SIZE + QXL_DEFAULT_VRAM_SIZE,
        io: u64::from(PCI_IO_START),
    };
    debug_assert!(bars.rom + QXL_ROM_SIZE <= PCI_MMIO32_START + (512 << 20));
    let intx_line = u8::try_from(intx_gsi).expect("INTx GSIs are below 24");
    let function = QxlPci::new(
        QXL_DEFAULT_RAM_SIZE,
        QXL_DEFAULT_VRAM_SIZE,
        bars,
        intx_line,
        irq,
    );

    let rom = Arc::new(Mutex::new(build_rom(QXL_DEFAULT_RAM_SIZE)));
    let mapper = QxlBarMapper {
        vm: vm.clone(),
        io_bus: io_bus.clone(),
        mmio_bus: mmio_bus.clone(),
        io: Arc::new(QxlIo::new(shared.clone())),
        rom: Arc::new(Mutex::new(QxlRom::new(rom))),
        ram,
        vram,
        shared: shared.clone(),
        warnings: Mutex::new(LogLimiter::new("qxl")),
    };
    pci.add_device(Box::new(function), Box::new(mapper))
        .ok_or(DisplayError::NoSlot)?;

    let worker = worker::spawn(
        "qxl-display",
        engine,
        shared.clone(),
        requests,
        resample_evt,
        listener,
    )
    .map_err(host("display thread"))?;
    log::info!("qxl: display device in PCI slot {slot}, INTx on GSI {intx_gsi}");
    Ok(DisplayHandle {
        shared,
        worker,
        irq: irq_handle,
    })
}
