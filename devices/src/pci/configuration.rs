// SPDX-License-Identifier: Apache-2.0
//! A type 0 configuration space header (PCI Local Bus 3.0, section 6.1).

/// Registers (dwords) in the 256-byte configuration space.
pub const CONFIG_REGISTERS: usize = 64;

const VENDOR_DEVICE_REG: usize = 0;
const COMMAND_STATUS_REG: usize = 1;
const CLASS_REVISION_REG: usize = 2;
const HEADER_TYPE_REG: usize = 3;
const SUBSYSTEM_REG: usize = 11;

/// The configuration space of one function: register values and which bits the guest may
/// write.
#[derive(Clone, Debug)]
pub struct PciConfiguration {
    registers: [u32; CONFIG_REGISTERS],
    writable: [u32; CONFIG_REGISTERS],
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
        PciConfiguration {
            registers,
            writable: [0; CONFIG_REGISTERS],
        }
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
