// SPDX-License-Identifier: Apache-2.0
//! A type 0 configuration space header (PCI Local Bus 3.0, section 6.1) with its BARs and
//! capability list.

/// Registers (dwords) in the 256-byte configuration space.
pub const CONFIG_REGISTERS: usize = 64;

const VENDOR_DEVICE_REG: usize = 0;
const COMMAND_STATUS_REG: usize = 1;
const CLASS_REVISION_REG: usize = 2;
const HEADER_TYPE_REG: usize = 3;
const BAR0_REG: usize = 4;
const SUBSYSTEM_REG: usize = 11;
const CAPABILITY_POINTER_REG: usize = 13;
const INTERRUPT_REG: usize = 15;
/// Number of BARs in a type 0 header.
pub const NUM_BARS: usize = 6;

/// Command register bits (PCI 3.0, 6.2.2).
pub const COMMAND_IO: u16 = 1 << 0;
/// Memory space decoding.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Bus mastering (DMA and MSI writes).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// INTx emulation disabled.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Command bits a guest may change: I/O, memory, bus master, parity, SERR, INTx disable.
const COMMAND_WRITABLE: u32 = 0x0547;
/// Status register bit 4: the capability list is valid.
const STATUS_CAPABILITIES: u32 = 1 << 4;
/// Status register bit 3: the device asserts INTx (read-only).
const STATUS_INTERRUPT: u32 = 1 << 3;
/// The first capability goes after the 64-byte header.
const FIRST_CAPABILITY: usize = 0x40;

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// I/O space.
    Io,
    /// 32-bit memory space.
    Memory32,
    /// 64-bit memory space (takes two BAR registers).
    Memory64 {
        /// Whether the memory is prefetchable.
        prefetchable: bool,
    },
}

/// A BAR as the guest currently has it programmed and decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarRegion {
    /// BAR index (0-5).
    pub index: usize,
    /// What it decodes.
    pub kind: BarKind,
    /// Guest address (port number for I/O).
    pub addr: u64,
    /// Size in bytes, a power of two.
    pub size: u64,
}

#[derive(Clone, Copy, Debug)]
struct Bar {
    kind: BarKind,
    size: u64,
}

/// The configuration space of one function: register values and which bits the guest may
/// write.
#[derive(Clone, Debug)]
pub struct PciConfiguration {
    registers: [u32; CONFIG_REGISTERS],
    writable: [u32; CONFIG_REGISTERS],
    bars: [Option<Bar>; NUM_BARS],
    /// Byte offset of the last capability added, to chain the next one.
    last_capability: Option<usize>,
    /// Where the next capability goes.
    next_capability: usize,
}

impl PciConfiguration {
    /// Creates a type 0 header with the given identity; everything else reads 0 and nothing is
    /// writable yet.
    pub fn new(vendor: u16, device: u16, class_code: u32, revision: u8) -> Self {
        let mut registers = [0u32; CONFIG_REGISTERS];
        registers[VENDOR_DEVICE_REG] = u32::from(device) << 16 | u32::from(vendor);
        registers[CLASS_REVISION_REG] = (class_code & 0xff_ffff) << 8 | u32::from(revision);
        registers[HEADER_TYPE_REG] = 0;
        registers[SUBSYSTEM_REG] = u32::from(device) << 16 | u32::from(vendor);
        let mut writable = [0; CONFIG_REGISTERS];
        writable[COMMAND_STATUS_REG] = COMMAND_WRITABLE;
        writable[INTERRUPT_REG] = 0xff;
        PciConfiguration {
            registers,
            writable,
            bars: [None; NUM_BARS],
            last_capability: None,
            next_capability: FIRST_CAPABILITY,
        }
    }

    /// Sets the subsystem vendor and device IDs.
    pub fn set_subsystem(&mut self, vendor: u16, device: u16) {
        self.registers[SUBSYSTEM_REG] = u32::from(device) << 16 | u32::from(vendor);
    }

    /// Declares INTx pin `pin` (1 = INTA) and the line number firmware routed it to.
    pub fn set_interrupt(&mut self, pin: u8, line: u8) {
        self.registers[INTERRUPT_REG] = u32::from(pin) << 8 | u32::from(line);
    }

    /// Sets the command register, as firmware does before handing over.
    pub fn set_command(&mut self, command: u16) {
        let status = self.registers[COMMAND_STATUS_REG] & 0xffff_0000;
        self.registers[COMMAND_STATUS_REG] = status | u32::from(command);
    }

    /// Sets or clears the interrupt status bit that reflects the INTx line.
    pub fn set_interrupt_status(&mut self, asserted: bool) {
        let reg = &mut self.registers[COMMAND_STATUS_REG];
        let bit = STATUS_INTERRUPT << 16;
        *reg = if asserted { *reg | bit } else { *reg & !bit };
    }

    /// Declares BAR `index` of `kind` and `size` (a power of two, at least 16 bytes for
    /// memory and 4 for I/O) at `addr`. A 64-bit BAR also takes register `index + 1`.
    #[allow(clippy::cast_possible_truncation)] // Splits 64-bit values into register halves.
    pub fn add_bar(&mut self, index: usize, kind: BarKind, size: u64, addr: u64) {
        assert!(
            size.is_power_of_two() && addr % size == 0,
            "BAR {index}: bad size or address"
        );
        let reg = BAR0_REG + index;
        let low_mask = !(size - 1);
        let (type_bits, addr_mask) = match kind {
            BarKind::Io => (0x1, 0xffff_fffc),
            BarKind::Memory32 => (0x0, 0xffff_fff0),
            BarKind::Memory64 { prefetchable } => (0x4 | u32::from(prefetchable) << 3, 0xffff_fff0),
        };
        let low = (low_mask & 0xffff_ffff) as u32 & addr_mask;
        self.registers[reg] = (addr & 0xffff_ffff) as u32 & low | type_bits;
        self.writable[reg] = low;
        if let BarKind::Memory64 { .. } = kind {
            self.registers[reg + 1] = (addr >> 32) as u32;
            self.writable[reg + 1] = (low_mask >> 32) as u32;
        }
        self.bars[index] = Some(Bar { kind, size });
    }

    /// Returns the BARs the device decodes now: programmed and enabled in the command
    /// register.
    pub fn bar_regions(&self) -> Vec<BarRegion> {
        let command = self.command();
        let mut regions = Vec::new();
        for (index, bar) in self.bars.iter().enumerate() {
            let Some(bar) = bar else { continue };
            let enabled = match bar.kind {
                BarKind::Io => command & COMMAND_IO != 0,
                _ => command & COMMAND_MEMORY != 0,
            };
            if enabled {
                let addr = self.bar_address(index, bar.kind);
                regions.push(BarRegion {
                    index,
                    kind: bar.kind,
                    addr,
                    size: bar.size,
                });
            }
        }
        regions
    }

    fn bar_address(&self, index: usize, kind: BarKind) -> u64 {
        let low = self.registers[BAR0_REG + index];
        match kind {
            BarKind::Io => u64::from(low & 0xffff_fffc),
            BarKind::Memory32 => u64::from(low & 0xffff_fff0),
            BarKind::Memory64 { .. } => {
                let high = self.registers[BAR0_REG + index + 1];
                u64::from(high) << 32 | u64::from(low & 0xffff_fff0)
            }
        }
    }

    /// Appends a capability whose body (after the ID and next-pointer bytes) is `body`,
    /// with `writable` masks per dword of the capability; returns its byte offset in
    /// configuration space.
    pub fn add_capability(&mut self, id: u8, body: &[u8], writable: &[u32]) -> usize {
        let offset = self.next_capability;
        let mut bytes = vec![id, 0];
        bytes.extend_from_slice(body);
        assert!(
            offset + bytes.len() <= CONFIG_REGISTERS * 4,
            "capabilities overflow"
        );

        for (i, chunk) in bytes.chunks(4).enumerate() {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            self.registers[offset / 4 + i] = u32::from_le_bytes(word);
            self.writable[offset / 4 + i] = writable.get(i).copied().unwrap_or(0);
        }

        let pointer = u8::try_from(offset).expect("capabilities lie in the first 256 bytes");
        match self.last_capability {
            Some(last) => self.set_byte(last + 1, pointer),
            None => {
                self.registers[CAPABILITY_POINTER_REG] = u32::from(pointer);
                self.registers[COMMAND_STATUS_REG] |= STATUS_CAPABILITIES << 16;
            }
        }
        self.last_capability = Some(offset);
        self.next_capability = (offset + bytes.len()).next_multiple_of(4);
        offset
    }

    fn set_byte(&mut self, offset: usize, value: u8) {
        let mut word = self.registers[offset / 4].to_le_bytes();
        word[offset % 4] = value;
        self.registers[offset / 4] = u32::from_le_bytes(word);
    }

    /// Lets the guest write `mask` bits of register `reg`.
    pub fn set_writable(&mut self, reg: usize, mask: u32) {
        if let Some(w) = self.writable.get_mut(reg) {
            *w = mask;
        }
    }

    /// Returns register `reg`, or all ones past the end of the space.
    pub fn read_register(&self, reg: usize) -> u32 {
        self.registers.get(reg).copied().unwrap_or(u32::MAX)
    }

    /// Writes `data` (1, 2 or 4 bytes) at byte `offset` of register `reg`, honouring the
    /// writable mask; other sizes and unaligned accesses are ignored.
    pub fn write_register(&mut self, reg: usize, offset: u64, data: &[u8]) {
        let Some(value) = merge(self.read_register(reg), offset, data) else {
            return;
        };

        if let (Some(r), Some(w)) = (self.registers.get_mut(reg), self.writable.get(reg)) {
            *r = (*r & !w) | (value & w);
        }
    }

    /// Returns the command register.
    pub fn command(&self) -> u16 {
        (self.registers[COMMAND_STATUS_REG] & 0xffff) as u16
    }
}

/// Puts `data` into `old` at byte `offset`; None for an access that is not 1, 2 or 4 bytes
/// wide, not naturally aligned, or that crosses the register.
pub fn merge(old: u32, offset: u64, data: &[u8]) -> Option<u32> {
    let start = access_start(offset, data.len())?;
    let mut bytes = old.to_le_bytes();
    bytes[start..start + data.len()].copy_from_slice(data);
    Some(u32::from_le_bytes(bytes))
}

/// Returns the first byte of a 1, 2 or 4-byte, naturally aligned access within a dword.
fn access_start(offset: u64, len: usize) -> Option<usize> {
    let start = usize::try_from(offset).ok()?;
    let fits = matches!(len, 1 | 2 | 4) && start % len == 0 && start + len <= 4;
    fits.then_some(start)
}

/// Copies the bytes of `value` at `offset` into `data`; all ones for a bad access.
pub fn extract(value: u32, offset: u64, data: &mut [u8]) {
    match access_start(offset, data.len()) {
        Some(start) => data.copy_from_slice(&value.to_le_bytes()[start..start + data.len()]),
        None => data.fill(0xff),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_registers() {
        let cfg = PciConfiguration::new(0x1b36, 0x0008, 0x06_00_00, 2);
        assert_eq!(cfg.read_register(0), 0x0008_1b36);
        assert_eq!(cfg.read_register(2), 0x0600_0002);
        assert_eq!(cfg.read_register(64), u32::MAX);
    }

    #[test]
    fn writes_respect_the_mask_and_access_rules() {
        let mut cfg = PciConfiguration::new(1, 2, 0, 0);
        cfg.write_register(0, 0, &[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(cfg.read_register(0), 0x0002_0001);

        cfg.set_writable(1, 0x0000_0007);
        cfg.write_register(1, 0, &[0xff, 0xff]);
        assert_eq!(cfg.command(), 7);
        cfg.write_register(1, 1, &[0, 0]);
        assert_eq!(cfg.command(), 7, "unaligned 16-bit write ignored");
        cfg.write_register(1, 0, &[0]);
        assert_eq!(cfg.command(), 0);
    }

    fn size_bar(cfg: &mut PciConfiguration, reg: usize) -> u32 {
        let saved = cfg.read_register(reg);
        cfg.write_register(reg, 0, &[0xff; 4]);
        let mask = cfg.read_register(reg);
        cfg.write_register(reg, 0, &saved.to_le_bytes());
        mask
    }

    #[test]
    fn bars_size_like_hardware_and_move() {
        let mut cfg = PciConfiguration::new(1, 2, 0, 0);
        cfg.add_bar(0, BarKind::Memory32, 64 << 20, 0xc000_0000);
        cfg.add_bar(3, BarKind::Io, 32, 0x1000);
        cfg.add_bar(
            4,
            BarKind::Memory64 { prefetchable: true },
            8 << 30,
            0x10_0000_0000,
        );

        assert_eq!(size_bar(&mut cfg, 4), 0xfc00_0000, "64 MiB memory BAR");
        assert_eq!(size_bar(&mut cfg, 7), 0xffff_ffe1, "32-byte I/O BAR");
        assert_eq!(
            size_bar(&mut cfg, 8),
            0x0000_000c,
            "64-bit prefetchable, low half"
        );
        assert_eq!(size_bar(&mut cfg, 9), 0xffff_fffe, "8 GiB: high half");
        assert_eq!(cfg.read_register(4), 0xc000_0000);

        assert!(
            cfg.bar_regions().is_empty(),
            "decoding is off until the command enables it"
        );
        cfg.write_register(1, 0, &[0x03, 0x00]);
        cfg.write_register(4, 0, &0xd000_0000u32.to_le_bytes());
        let regions = cfg.bar_regions();
        assert_eq!(regions.len(), 3);
        assert_eq!(
            regions[0],
            BarRegion {
                index: 0,
                kind: BarKind::Memory32,
                addr: 0xd000_0000,
                size: 64 << 20
            }
        );
        assert_eq!((regions[1].addr, regions[1].size), (0x1000, 32));
        assert_eq!(regions[2].addr, 0x10_0000_0000);

        cfg.write_register(1, 0, &[0x01, 0x00]);
        assert_eq!(
            cfg.bar_regions().len(),
            1,
            "memory decoding off: only the I/O BAR"
        );
    }

    #[test]
    fn capabilities_are_chained_from_the_pointer() {
        let mut cfg = PciConfiguration::new(1, 2, 0, 0);
        let first = cfg.add_capability(0x05, &[0u8; 22], &[0x0001_0000]);
        let second = cfg.add_capability(0x09, &[1, 2], &[]);
        assert_eq!(first, 0x40);
        assert_eq!(second, 0x58);
        assert_eq!(cfg.read_register(13), 0x40);
        assert_ne!(
            cfg.read_register(1) & (1 << 20),
            0,
            "status: capability list"
        );
        assert_eq!(cfg.read_register(0x40 / 4) & 0xffff, 0x5805);
        assert_eq!(cfg.read_register(0x58 / 4), 0x0201_0009);

        cfg.write_register(0x40 / 4, 2, &[0xff, 0xff]);
        assert_eq!(
            cfg.read_register(0x40 / 4) >> 16,
            0x0001,
            "only the writable bit"
        );
    }

    #[test]
    fn extract_reads_bytes_and_rejects_bad_accesses() {
        let mut one = [0u8; 1];
        extract(0x4433_2211, 2, &mut one);
        assert_eq!(one, [0x33]);

        let mut two = [0u8; 2];
        extract(0x4433_2211, 2, &mut two);
        assert_eq!(two, [0x33, 0x44]);
        extract(0x4433_2211, 3, &mut two);
        assert_eq!(two, [0xff, 0xff]);

        let mut three = [0u8; 3];
        extract(0, 0, &mut three);
        assert_eq!(three, [0xff; 3]);
    }
}
