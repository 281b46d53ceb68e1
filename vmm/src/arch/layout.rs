// SPDX-License-Identifier: Apache-2.0
//! The guest-physical memory map.
//!
//! ```text
//! 0x0000_0000  RAM: real-mode area, boot structures (GDT, zero page, page tables, cmdline)
//! 0x0009_fc00  EBDA, left out of the e820 RAM map as on a PC
//! 0x000e_0000  ACPI tables (RSDP first, where a legacy scan would find it)
//! 0x0010_0000  RAM: kernel, initramfs, the rest of low memory, up to 3 GiB at most
//! 0xc000_0000  32-bit PCI MMIO window (512 MiB)
//! 0xe000_0000  PCI ECAM for bus 0 (1 MiB)
//! 0xfec0_0000  IOAPIC            0xfee0_0000  local APICs
//! 0x1_0000_0000  RAM above 3 GiB of guest memory, then the 64-bit PCI MMIO window
//! ```

use vm_memory::GuestAddress;

/// GDT used for the 64-bit entry.
pub const BOOT_GDT_START: GuestAddress = GuestAddress(0x500);
/// An empty IDT, right after the GDT.
pub const BOOT_IDT_START: GuestAddress = GuestAddress(0x520);
/// The Linux zero page (`struct boot_params`).
pub const ZERO_PAGE_START: GuestAddress = GuestAddress(0x7000);
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity-mapping page tables: PML4, one PDPT, one PD of 2 MiB pages (the first 1 GiB).
pub const PML4_START: GuestAddress = GuestAddress(0x9000);
/// Page directory pointer table.
pub const PDPTE_START: GuestAddress = GuestAddress(0xa000);
/// Page directory.
pub const PDE_START: GuestAddress = GuestAddress(0xb000);
/// The kernel command line.
pub const CMDLINE_START: GuestAddress = GuestAddress(0x2_0000);
/// Start of the Extended BIOS Data Area; RAM in the e820 map stops here.
pub const EBDA_START: u64 = 0x9_fc00;
/// Where the ACPI tables are written.
pub const ACPI_START: GuestAddress = GuestAddress(0xe_0000);
/// Room for the ACPI tables, up to 1 MiB.
pub const ACPI_SIZE: u64 = 0x2_0000;
/// Start of high memory, where the kernel is loaded.
pub const HIMEM_START: GuestAddress = GuestAddress(0x10_0000);

/// Start of the hole below 4 GiB: guest RAM past this point goes above 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End of the hole below 4 GiB.
pub const MMIO_HOLE_END: u64 = 1 << 32;
/// The 32-bit PCI MMIO window, for BARs placed below 4 GiB.
pub const PCI_MMIO32_START: u64 = MMIO_HOLE_START;
/// Size of the 32-bit PCI MMIO window.
pub const PCI_MMIO32_SIZE: u64 = 0x2000_0000;
/// ECAM (memory-mapped configuration space) of PCI bus 0.
pub const PCI_ECAM_START: u64 = 0xe000_0000;
/// IOAPIC registers.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC registers.
pub const APIC_START: u64 = 0xfee0_0000;
/// Size of the 64-bit PCI MMIO window, placed above the end of RAM.
pub const PCI_MMIO64_SIZE: u64 = 64 << 30;
/// I/O ports that PCI devices may be given.
pub const PCI_IO_START: u16 = 0x1000;

/// IOAPIC pins; KVM's in-kernel IOAPIC has 24.
pub const IOAPIC_PINS: u32 = 24;
/// GSI of the i8042's keyboard port (ISA IRQ 1, edge-triggered).
pub const KEYBOARD_GSI: u32 = 1;
/// GSI of COM1.
pub const SERIAL_GSI: u32 = 4;
/// GSI of the i8042's auxiliary (mouse) port (ISA IRQ 12, edge-triggered).
pub const MOUSE_GSI: u32 = 12;
/// First GSI for PCI INTx lines; pins 16-23 have no ISA meaning.
pub const PCI_INTX_GSI_BASE: u32 = 16;

// The fixed regions must not overlap; checked when the crate is compiled.
const _: () = {
    assert!(BOOT_IDT_START.0 + 8 <= ZERO_PAGE_START.0);
    assert!(ZERO_PAGE_START.0 + 4096 <= BOOT_STACK_POINTER);
    assert!(BOOT_STACK_POINTER <= PML4_START.0);
    assert!(PDE_START.0 + 4096 <= CMDLINE_START.0);
    assert!(CMDLINE_START.0 + 2048 <= EBDA_START);
    assert!(ACPI_START.0 + ACPI_SIZE <= HIMEM_START.0);
    assert!(PCI_MMIO32_START + PCI_MMIO32_SIZE <= PCI_ECAM_START);
    assert!(PCI_ECAM_START + (1 << 20) <= IOAPIC_START);
    assert!(IOAPIC_START < APIC_START && APIC_START < MMIO_HOLE_END);
};

/// Returns a fixed address of the layout below 4 GiB as the 32-bit value firmware structures
/// hold.
pub fn low32(addr: u64) -> u32 {
    u32::try_from(addr).expect("layout address below 4 GiB")
}

/// The guest RAM ranges for `size` bytes of memory: up to 3 GiB below the hole, the rest at
/// 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, u64)> {
    let low = size.min(MMIO_HOLE_START);
    let mut ranges = vec![(GuestAddress(0), low)];
    if size > low {
        ranges.push((GuestAddress(MMIO_HOLE_END), size - low));
    }
    ranges
}

/// End of low RAM (below the hole) for `size` bytes of memory.
pub fn low_ram_end(size: u64) -> u64 {
    size.min(MMIO_HOLE_START)
}

/// Start of the 64-bit PCI MMIO window: the first 1 GiB boundary above RAM, and never below
/// 4 GiB.
pub fn pci_mmio64_start(size: u64) -> u64 {
    let ram_end = ram_ranges(size)
        .last()
        .map_or(0, |(start, len)| start.0 + len);
    ram_end.max(MMIO_HOLE_END).next_multiple_of(1 << 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_low_range() {
        assert_eq!(ram_ranges(512 << 20), vec![(GuestAddress(0), 512 << 20)]);
        assert_eq!(low_ram_end(512 << 20), 512 << 20);
        assert_eq!(pci_mmio64_start(512 << 20), 1 << 32);
    }

    #[test]
    fn memory_past_3g_goes_above_4g() {
        let ranges = ram_ranges(4 << 30);
        assert_eq!(
            ranges,
            vec![(GuestAddress(0), 3 << 30), (GuestAddress(4 << 30), 1 << 30)]
        );
        assert_eq!(pci_mmio64_start(4 << 30), 5 << 30);
        assert_eq!(ram_ranges(3 << 30), vec![(GuestAddress(0), 3 << 30)]);
    }
}
