// SPDX-License-Identifier: Apache-2.0
//! The root of PCI bus 0: the host bridge at 00:00.0 and the two ways of reaching
//! configuration space.

use super::configuration::{extract, BarRegion, PciConfiguration};
use crate::bus::BusDevice;

/// Configuration address port (mechanism #1); the data port is at +4.
pub const PCI_CONFIG_IO_PORT: u16 = 0xcf8;
/// Ports taken by the address and data registers.
pub const PCI_CONFIG_IO_LEN: u16 = 8;
/// Bytes of ECAM space that bus 0 takes: 32 devices x 8 functions x 4 KiB.
pub const ECAM_SIZE_BUS0: u64 = 1 << 20;

/// Red Hat's vendor ID and the ID of its generic PCIe host bridge, which Linux drives with
/// no special code.
const HOST_BRIDGE_VENDOR: u16 = 0x1b36;
const HOST_BRIDGE_DEVICE: u16 = 0x0008;
/// Class code: bridge device, host bridge.
const HOST_BRIDGE_CLASS: u32 = 0x06_00_00;

const DEVICES_PER_BUS: usize = 32;
const CONFIG_ENABLE: u32 = 1 << 31;

/// A function on bus 0, seen through its configuration space.
pub trait PciDevice: Send {
    /// Returns configuration register `reg` (a dword index).
    fn read_config_register(&mut self, reg: usize) -> u32;

    /// Writes `data` at byte `offset` of configuration register `reg`.
    fn write_config_register(&mut self, reg: usize, offset: u64, data: &[u8]);

    /// Returns the BARs the function decodes now.
    fn bar_regions(&self) -> Vec<BarRegion> {
        Vec::new()
    }
}

/// Places a function's BARs in the guest's address spaces; implemented by the VMM, which
/// knows what backs each BAR (trapped I/O or MMIO, or host memory mapped into the guest).
pub trait BarMapper: Send {
    /// Makes `region` decode at its address.
    fn map_bar(&self, region: BarRegion);

    /// Stops `region` from decoding.
    fn unmap_bar(&self, region: BarRegion);
}

struct Slot {
    device: Box<dyn PciDevice>,
    mapper: Option<Box<dyn BarMapper>>,
}

struct HostBridge(PciConfiguration);

impl PciDevice for HostBridge {
    fn read_config_register(&mut self, reg: usize) -> u32 {
        self.0.read_register(reg)
    }

    fn write_config_register(&mut self, reg: usize, offset: u64, data: &[u8]) {
        self.0.write_register(reg, offset, data);
    }
}

/// Bus 0 and its configuration access mechanisms.
///
/// The same root is inserted on the I/O bus at [`PCI_CONFIG_IO_PORT`] and on the MMIO bus at
/// the ECAM base; it tells the two apart by the base of the access.
pub struct PciRoot {
    config_address: u32,
    ecam_base: u64,
    slots: Vec<Option<Slot>>,
}

impl PciRoot {
    /// Creates bus 0 with the host bridge in slot 0; ECAM accesses are expected at
    /// `ecam_base`.
    pub fn new(ecam_base: u64) -> Self {
        let mut slots: Vec<Option<Slot>> = Vec::new();
        slots.resize_with(DEVICES_PER_BUS, || None);
        let bridge =
            PciConfiguration::new(HOST_BRIDGE_VENDOR, HOST_BRIDGE_DEVICE, HOST_BRIDGE_CLASS, 0);
        slots[0] = Some(Slot {
            device: Box::new(HostBridge(bridge)),
            mapper: None,
        });
        PciRoot {
            config_address: 0,
            ecam_base,
            slots,
        }
    }

    /// Returns the slot [`add_device`](Self::add_device) would use next.
    pub fn next_free_slot(&self) -> Option<u8> {
        let slot = self.slots.iter().position(Option::is_none)?;
        u8::try_from(slot).ok()
    }

    /// Puts `device` in the first free slot, maps the BARs it decodes from the start through
    /// `mapper`, and returns the slot number.
    pub fn add_device(
        &mut self,
        device: Box<dyn PciDevice>,
        mapper: Box<dyn BarMapper>,
    ) -> Option<u8> {
        let slot = self.slots.iter().position(Option::is_none)?;
        for region in device.bar_regions() {
            mapper.map_bar(region);
        }
        self.slots[slot] = Some(Slot {
            device,
            mapper: Some(mapper),
        });
        u8::try_from(slot).ok()
    }

    /// Finds the function that a (bus, device, function) triple names; only function 0 of
    /// devices on bus 0 exist.
    fn function(&mut self, bus: u32, device: u32, function: u32) -> Option<&mut Slot> {
        if bus != 0 || function != 0 {
            return None;
        }
        self.slots.get_mut(device as usize)?.as_mut()
    }

    fn config_read(&mut self, bdf: u32, reg: usize, offset: u64, data: &mut [u8]) {
        let (bus, dev, func) = (bdf >> 8 & 0xff, bdf >> 3 & 0x1f, bdf & 0x7);
        match self.function(bus, dev, func) {
            Some(slot) => extract(slot.device.read_config_register(reg), offset, data),
            None => data.fill(0xff),
        }
    }

    fn config_write(&mut self, bdf: u32, reg: usize, offset: u64, data: &[u8]) {
        let (bus, dev, func) = (bdf >> 8 & 0xff, bdf >> 3 & 0x1f, bdf & 0x7);
        if let Some(slot) = self.function(bus, dev, func) {
            let before = slot.device.bar_regions();
            slot.device.write_config_register(reg, offset, data);
            let after = slot.device.bar_regions();
            if let (Some(mapper), true) = (&slot.mapper, before != after) {
                remap(mapper.as_ref(), &before, &after);
            }
        }
    }

    fn io_read(&mut self, offset: u64, data: &mut [u8]) {
        if offset < 4 {
            return extract(self.config_address, offset, data);
        }

        if self.config_address & CONFIG_ENABLE == 0 {
            return data.fill(0xff);
        }
        let bdf = self.config_address >> 8 & 0xffff;
        let reg = (self.config_address >> 2 & 0x3f) as usize;
        self.config_read(bdf, reg, offset - 4, data);
    }

    fn io_write(&mut self, offset: u64, data: &[u8]) {
        if offset < 4 {
            // Only dword writes select a register; narrower ones are other uses of the port.
            if let (0, Ok(bytes)) = (offset, <[u8; 4]>::try_from(data)) {
                self.config_address = u32::from_le_bytes(bytes) & 0x80ff_fffc;
            }
            return;
        }

        if self.config_address & CONFIG_ENABLE == 0 {
            return;
        }
        let bdf = self.config_address >> 8 & 0xffff;
        let reg = (self.config_address >> 2 & 0x3f) as usize;
        self.config_write(bdf, reg, offset - 4, data);
    }

    /// Splits an ECAM offset into (bdf, register, byte offset). Registers past the first 256
    /// bytes (PCIe extended space) do not exist here.
    fn ecam_decode(offset: u64) -> Option<(u32, usize, u64)> {
        let bdf = u32::try_from(offset >> 12).ok()?;
        let reg = usize::try_from((offset & 0xfff) >> 2).ok()?;
        (reg < 64).then_some((bdf, reg, offset & 3))
    }
}

/// Unmaps the regions that moved or stopped decoding, then maps the new ones.
fn remap(mapper: &dyn BarMapper, before: &[BarRegion], after: &[BarRegion]) {
    for old in before.iter().filter(|r| !after.contains(r)) {
        mapper.unmap_bar(*old);
    }
    for new in after.iter().filter(|r| !before.contains(r)) {
        mapper.map_bar(*new);
    }
}

impl BusDevice for PciRoot {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        if base != self.ecam_base {
            return self.io_read(offset, data);
        }

        match Self::ecam_decode(offset) {
            Some((bdf, reg, byte)) => self.config_read(bdf, reg, byte, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        if base != self.ecam_base {
            return self.io_write(offset, data);
        }

        if let Some((bdf, reg, byte)) = Self::ecam_decode(offset) {
            self.config_write(bdf, reg, byte, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECAM: u64 = 0xe000_0000;
    const IO: u64 = PCI_CONFIG_IO_PORT as u64;

    fn read_io(root: &mut PciRoot, address: u32) -> u32 {
        root.write(IO, 0, &address.to_le_bytes());
        let mut data = [0u8; 4];
        root.read(IO, 4, &mut data);
        u32::from_le_bytes(data)
    }

    #[test]
    fn address_register_reads_back_as_linux_probes_it() {
        let mut root = PciRoot::new(ECAM);
        root.write(IO, 0, &0x8000_0000u32.to_le_bytes());
        let mut data = [0u8; 4];
        root.read(IO, 0, &mut data);
        assert_eq!(u32::from_le_bytes(data), 0x8000_0000);
    }

    #[test]
    fn host_bridge_is_at_00_00_0_and_other_slots_are_empty() {
        let mut root = PciRoot::new(ECAM);
        assert_eq!(read_io(&mut root, 0x8000_0000), 0x0008_1b36);
        assert_eq!(read_io(&mut root, 0x8000_0008) >> 8, 0x06_00_00);
        assert_eq!(read_io(&mut root, 0x8000_0800), u32::MAX, "00:01.0");
        assert_eq!(read_io(&mut root, 0x8000_0100), u32::MAX, "00:00.1");
        assert_eq!(read_io(&mut root, 0x8001_0000), u32::MAX, "01:00.0");
        assert_eq!(
            read_io(&mut root, 0x0000_0000),
            u32::MAX,
            "enable bit clear"
        );
    }

    struct BarOnly(PciConfiguration);

    impl PciDevice for BarOnly {
        fn read_config_register(&mut self, reg: usize) -> u32 {
            self.0.read_register(reg)
        }

        fn write_config_register(&mut self, reg: usize, offset: u64, data: &[u8]) {
            self.0.write_register(reg, offset, data);
        }

        fn bar_regions(&self) -> Vec<BarRegion> {
            self.0.bar_regions()
        }
    }

    #[derive(Clone, Default)]
    struct Log(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl BarMapper for Log {
        fn map_bar(&self, r: BarRegion) {
            self.0
                .lock()
                .unwrap()
                .push(format!("map {} {:#x}", r.index, r.addr));
        }

        fn unmap_bar(&self, r: BarRegion) {
            self.0
                .lock()
                .unwrap()
                .push(format!("unmap {} {:#x}", r.index, r.addr));
        }
    }

    #[test]
    fn bar_moves_and_decode_changes_reach_the_mapper() {
        use crate::pci::{BarKind, COMMAND_MEMORY};

        let mut cfg = PciConfiguration::new(0x1b36, 0x100, 0x03_80_00, 5);
        cfg.add_bar(0, BarKind::Memory32, 0x1000, 0xc000_0000);
        cfg.set_command(COMMAND_MEMORY);
        let log = Log::default();
        let mut root = PciRoot::new(ECAM);
        assert_eq!(
            root.add_device(Box::new(BarOnly(cfg)), Box::new(log.clone())),
            Some(1)
        );

        let bar0 = 0x8000_0810u32;
        // Linux sizes a BAR with decoding off, then restores it.
        root.write(IO, 0, &0x8000_0804u32.to_le_bytes());
        root.write(IO, 4, &[0, 0]);
        root.write(IO, 0, &bar0.to_le_bytes());
        root.write(IO, 4, &u32::MAX.to_le_bytes());
        root.write(IO, 4, &0xd000_0000u32.to_le_bytes());
        root.write(IO, 0, &0x8000_0804u32.to_le_bytes());
        root.write(IO, 4, &[0x02, 0]);

        let log = log.0.lock().unwrap().clone();
        assert_eq!(
            log,
            vec!["map 0 0xc0000000", "unmap 0 0xc0000000", "map 0 0xd0000000"]
        );
    }

    #[test]
    fn ecam_reaches_the_same_space() {
        let mut root = PciRoot::new(ECAM);
        let mut data = [0u8; 2];
        root.read(ECAM, 2, &mut data);
        assert_eq!(u16::from_le_bytes(data), 0x0008);

        let mut data = [0u8; 4];
        root.read(ECAM, 0x100, &mut data);
        assert_eq!(data, [0xff; 4], "extended configuration space is absent");
        root.read(ECAM, 1 << 15, &mut data);
        assert_eq!(data, [0xff; 4], "device 1 is absent");
    }
}
