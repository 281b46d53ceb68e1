// SPDX-License-Identifier: Apache-2.0
//! The Linux x86 boot protocol: the zero page (`struct boot_params`) with its e820 memory map,
//! and the command line.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{
    low32, ram_ranges, ACPI_SIZE, ACPI_START, CMDLINE_START, EBDA_START, HIMEM_START,
    PCI_ECAM_START, ZERO_PAGE_START,
};

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// 0xaa55 at offset 0x1fe, as on a boot sector.
const BOOT_FLAG: u16 = 0xaa55;
const HDRS: u32 = u32::from_le_bytes(*b"HdrS");
/// "Undefined" boot loader ID (Documentation/arch/x86/boot.rst).
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// loadflags bit 0: the protected-mode kernel is loaded at 1 MiB.
const LOADED_HIGH: u8 = 1 << 0;
/// Physical alignment the kernel expects when the header does not say (an ELF vmlinux).
const DEFAULT_KERNEL_ALIGNMENT: u32 = 0x100_0000;

/// Errors writing boot structures.
#[derive(Debug, Error)]
pub enum BootError {
    /// The memory map has more entries than the zero page holds.
    #[error("the e820 map needs {0} entries; the zero page holds 128")]
    TooManyE820Entries(usize),
    /// Guest memory refused a write.
    #[error("cannot write {0} into guest memory")]
    Write(&'static str, #[source] vm_memory::GuestMemoryError),
}

/// Everything the zero page records about this boot.
pub struct BootInfo<'a> {
    /// The bzImage setup header, if the kernel was one.
    pub header: Option<setup_header>,
    /// Guest memory size.
    pub memory_size: u64,
    /// The command line (without its NUL).
    pub cmdline: &'a str,
    /// Initramfs address and size.
    pub initramfs: Option<(GuestAddress, u64)>,
    /// Address of the ACPI RSDP.
    pub rsdp: GuestAddress,
}

/// The e820 map for `memory_size` bytes of guest memory.
pub fn e820_map(memory_size: u64) -> Vec<boot_e820_entry> {
    let entry = |addr, size, r#type| boot_e820_entry { addr, size, r#type };
    let mut map = vec![
        entry(0, EBDA_START, E820_RAM),
        entry(ACPI_START.0, ACPI_SIZE, E820_RESERVED),
    ];

    for (start, len) in ram_ranges(memory_size) {
        let end = start.0 + len;
        let start = start.0.max(HIMEM_START.0);
        if end > start {
            map.push(entry(start, end - start, E820_RAM));
        }
    }

    // Reserving ECAM here is what lets Linux trust the MCFG table early in boot.
    map.push(entry(
        PCI_ECAM_START,
        devices::pci::ECAM_SIZE_BUS0,
        E820_RESERVED,
    ));
    map
}

/// Writes the command line and the zero page.
pub fn write_boot_params(mem: &GuestMemoryMmap, info: &BootInfo) -> Result<(), BootError> {
    let mut cmdline = info.cmdline.as_bytes().to_vec();
    cmdline.push(0);
    mem.write_slice(&cmdline, CMDLINE_START)
        .map_err(|e| BootError::Write("command line", e))?;

    let mut params = boot_params {
        hdr: info.header.unwrap_or_default(),
        ..Default::default()
    };
    fill_header(&mut params.hdr, info);

    let map = e820_map(info.memory_size);
    if map.len() > params.e820_table.len() {
        return Err(BootError::TooManyE820Entries(map.len()));
    }
    params.e820_table[..map.len()].copy_from_slice(&map);
    params.e820_entries = u8::try_from(map.len()).expect("at most 128 entries");
    params.acpi_rsdp_addr = info.rsdp.0;

    mem.write_obj(params, ZERO_PAGE_START)
        .map_err(|e| BootError::Write("zero page", e))
}

fn fill_header(hdr: &mut setup_header, info: &BootInfo) {
    hdr.boot_flag = BOOT_FLAG;
    hdr.header = HDRS;
    hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    hdr.loadflags |= LOADED_HIGH;
    hdr.cmd_line_ptr = low32(CMDLINE_START.0);
    hdr.cmdline_size = u32::try_from(info.cmdline.len() + 1).unwrap_or(u32::MAX);
    if hdr.kernel_alignment == 0 {
        hdr.kernel_alignment = DEFAULT_KERNEL_ALIGNMENT;
    }

    if let Some((addr, size)) = info.initramfs {
        // Both fit in 32 bits: the initramfs is placed below the 3 GiB hole.
        hdr.ramdisk_image = low32(addr.0);
        hdr.ramdisk_size = low32(size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(map: &[boot_e820_entry]) -> Vec<(u64, u64, u32)> {
        map.iter().map(|e| (e.addr, e.size, e.r#type)).collect()
    }

    #[test]
    fn e820_for_512m() {
        assert_eq!(
            fields(&e820_map(512 << 20)),
            vec![
                (0, 0x9_fc00, E820_RAM),
                (0xe_0000, 0x2_0000, E820_RESERVED),
                (0x10_0000, (512 << 20) - 0x10_0000, E820_RAM),
                (0xe000_0000, 1 << 20, E820_RESERVED),
            ]
        );
    }

    #[test]
    fn e820_for_6g_splits_around_the_hole() {
        assert_eq!(
            fields(&e820_map(6 << 30)),
            vec![
                (0, 0x9_fc00, E820_RAM),
                (0xe_0000, 0x2_0000, E820_RESERVED),
                (0x10_0000, (3 << 30) - 0x10_0000, E820_RAM),
                (4 << 30, 3 << 30, E820_RAM),
                (0xe000_0000, 1 << 20, E820_RESERVED),
            ]
        );
    }

    #[test]
    fn zero_page_fields() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let info = BootInfo {
            header: None,
            memory_size: 64 << 20,
            cmdline: "console=ttyS0 -- a -- b",
            initramfs: Some((GuestAddress(0x300_0000), 1234)),
            rsdp: ACPI_START,
        };
        write_boot_params(&mem, &info).unwrap();

        let params: boot_params = mem.read_obj(ZERO_PAGE_START).unwrap();
        let hdr = params.hdr;
        assert_eq!({ hdr.boot_flag }, 0xaa55);
        assert_eq!({ hdr.header }, 0x5372_6448);
        assert_eq!({ hdr.cmd_line_ptr }, 0x2_0000);
        assert_eq!({ hdr.ramdisk_image }, 0x300_0000);
        assert_eq!({ hdr.ramdisk_size }, 1234);
        assert_eq!({ params.acpi_rsdp_addr }, 0xe_0000);
        assert_eq!(params.e820_entries, 4);

        let mut cmdline = vec![0u8; 24];
        mem.read_slice(&mut cmdline, CMDLINE_START).unwrap();
        assert_eq!(&cmdline, b"console=ttyS0 -- a -- b\0");
    }
}
