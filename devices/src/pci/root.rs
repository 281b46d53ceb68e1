// SPDX-License-Identifier: Apache-2.0
//! The root of PCI bus 0: the host bridge at 00:00.0 and the two ways of reaching
//! configuration space.

use super::configuration::{extract, PciConfiguration};
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
    slots: Vec<Option<Box<dyn PciDevice>>>,
}

impl PciRoot {
    /// Creates bus 0 with the host bridge in slot 0; ECAM accesses are expected at
    /// `ecam_base`.
    pub fn new(ecam_base: u64) -> Self {
        let mut slots: Vec<Option<Box<dyn PciDevice>>> = Vec::new();
        slots.resize_with(DEVICES_PER_BUS, || None);
        let bridge =
            PciConfiguration::new(HOST_BRIDGE_VENDOR, HOST_BRIDGE_DEVICE, HOST_BRIDGE_CLASS, 0);
        slots[0] = Some(Box::new(HostBridge(bridge)));
        PciRoot {
            config_address: 0,
            ecam_base,
            slots,
        }
    }

    /// Puts `device` in the first free slot and returns the slot number.
    pub fn add_device(&mut self, device: Box<dyn PciDevice>) -> Option<u8> {
        let slot = self.slots.iter().position(Option::is_none)?;
        self.slots[slot] = Some(device);
        u8::try_from(slot).ok()
    }

    /// Finds the function that a (bus, device, function) triple names; only function 0 of
    /// devices on bus 0 exist.
    fn function(
        &mut self,
        bus: u32,
        device: u32,
        function: u32,
    ) -> Option<&mut (dyn PciDevice + 'static)> {
        if bus != 0 || function != 0 {
            return None;
        }
        self.slots.get_mut(device as usize)?.as_deref_mut()
    }

    fn config_read(&mut self, bdf: u32, reg: usize, offset: u64, data: &mut [u8]) {
        let (bus, dev, func) = (bdf >> 8 & 0xff, bdf >> 3 & 0x1f, bdf & 0x7);
        match self.function(bus, dev, func) {
            Some(f) => extract(f.read_config_register(reg), offset, data),
            None => data.fill(0xff),
        }
    }

    fn config_write(&mut self, bdf: u32, reg: usize, offset: u64, data: &[u8]) {
        let (bus, dev, func) = (bdf >> 8 & 0xff, bdf >> 3 & 0x1f, bdf & 0x7);
        if let Some(f) = self.function(bus, dev, func) {
            f.write_config_register(reg, offset, data);
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
