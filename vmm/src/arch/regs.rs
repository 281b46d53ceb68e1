// SPDX-License-Identifier: Apache-2.0
//! Initial vCPU state for the Linux 64-bit boot protocol: long mode with paging on, an
//! identity map of the first 1 GiB, flat segments, `rsi` pointing at the zero page.

use kvm_bindings::{
    kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, Msrs,
};
use kvm_ioctls::VcpuFd;
use thiserror::Error;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
    ZERO_PAGE_START,
};

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Page table entry bits: present, writable, and (in a PD) a 2 MiB page.
const PTE_PRESENT_RW: u64 = 0x3;
const PDE_PAGE_SIZE: u64 = 0x80;

/// Selectors of the boot GDT's code, data and TSS descriptors.
const CODE_SELECTOR: u16 = 0x08;
const DATA_SELECTOR: u16 = 0x10;
const TSS_SELECTOR: u16 = 0x18;

/// MSR indices (Intel SDM vol. 4).
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// MISC_ENABLE bit 0: fast string operations.
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRdefType: MTRRs enabled (bit 11), default type write-back (6).
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

/// Local APIC register offsets and the delivery mode field of an LVT entry.
const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// Errors setting up a vCPU's registers.
#[derive(Debug, Error)]
pub enum RegsError {
    /// A KVM register ioctl failed.
    #[error("cannot set the vCPU's {0}")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
    /// Guest memory refused a write of a boot structure.
    #[error("cannot write the boot {0} into guest memory")]
    Memory(&'static str, #[source] vm_memory::GuestMemoryError),
}

/// Builds a GDT descriptor from its flags/access word, base and limit.
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = u64::from(base);
    let limit = u64::from(limit);
    let flags = u64::from(flags);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// Decodes a GDT descriptor into the segment KVM expects.
#[allow(clippy::cast_possible_truncation)] // Each field is masked to its width before the cast.
fn segment_from_gdt(entry: u64, selector: u16) -> kvm_segment {
    let granularity = (entry >> 55 & 1) as u8;
    let limit = ((entry >> 32 & 0x000f_0000) | (entry & 0xffff)) as u32;
    kvm_segment {
        base: (entry >> 16 & 0x00ff_ffff) | (entry >> 32 & 0xff00_0000),
        limit: if granularity == 1 {
            limit << 12 | 0xfff
        } else {
            limit
        },
        selector,
        type_: (entry >> 40 & 0xf) as u8,
        present: (entry >> 47 & 1) as u8,
        dpl: (entry >> 45 & 3) as u8,
        db: (entry >> 54 & 1) as u8,
        s: (entry >> 44 & 1) as u8,
        l: (entry >> 53 & 1) as u8,
        g: granularity,
        avl: (entry >> 52 & 1) as u8,
        unusable: u8::from((entry >> 47 & 1) == 0),
        padding: 0,
    }
}

/// The boot GDT: null, 64-bit code, data, TSS.
fn boot_gdt() -> [u64; 4] {
    [
        0,
        gdt_entry(0xa09b, 0, 0xfffff),
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ]
}

/// Writes the GDT, IDT and page tables into guest memory.
pub fn write_boot_structures(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    let err = |what| move |e| RegsError::Memory(what, e);
    for (i, entry) in boot_gdt().iter().enumerate() {
        let addr = BOOT_GDT_START.unchecked_add(i as u64 * 8);
        mem.write_obj(*entry, addr).map_err(err("GDT"))?;
    }
    mem.write_obj(0u64, BOOT_IDT_START).map_err(err("IDT"))?;

    mem.write_obj(PDPTE_START.0 | PTE_PRESENT_RW, PML4_START)
        .map_err(err("PML4"))?;
    mem.write_obj(PDE_START.0 | PTE_PRESENT_RW, PDPTE_START)
        .map_err(err("PDPT"))?;
    for i in 0..512u64 {
        let entry = (i << 21) | PDE_PAGE_SIZE | PTE_PRESENT_RW;
        mem.write_obj(entry, PDE_START.unchecked_add(i * 8))
            .map_err(err("PD"))?;
    }
    Ok(())
}

/// Puts the boot vCPU in long mode at `entry`.
pub fn setup_boot_vcpu(vcpu: &VcpuFd, entry: GuestAddress) -> Result<(), RegsError> {
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| RegsError::Kvm("special registers", e))?;
    long_mode_sregs(&mut sregs);
    vcpu.set_sregs(&sregs)
        .map_err(|e| RegsError::Kvm("special registers", e))?;

    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry.0,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START.0,
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .map_err(|e| RegsError::Kvm("general registers", e))
}

/// Fills `sregs` for the 64-bit entry: flat segments from the boot GDT, paging on.
pub fn long_mode_sregs(sregs: &mut kvm_sregs) {
    let gdt = boot_gdt();
    let code = segment_from_gdt(gdt[1], CODE_SELECTOR);
    let data = segment_from_gdt(gdt[2], DATA_SELECTOR);

    sregs.gdt.base = BOOT_GDT_START.0;
    sregs.gdt.limit = u16::try_from(std::mem::size_of_val(&gdt) - 1).expect("4 entries");
    sregs.idt.base = BOOT_IDT_START.0;
    sregs.idt.limit = 7;
    sregs.cs = code;
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = segment_from_gdt(gdt[3], TSS_SELECTOR);

    sregs.cr3 = PML4_START.0;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
}

/// Sets the x87 and SSE control words to their reset values.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu)
        .map_err(|e| RegsError::Kvm("FPU state", e))
}

/// The MSRs a firmware would have set, limited to those KVM can save and restore.
pub fn boot_msrs(supported: &[u32]) -> Vec<kvm_msr_entry> {
    let wanted = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ];
    wanted
        .iter()
        .filter(|(index, _)| supported.contains(index))
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect()
}

/// Writes the boot MSRs; KVM stops at the first one it refuses, which is logged.
pub fn setup_msrs(vcpu: &VcpuFd, supported: &[u32]) -> Result<(), RegsError> {
    let entries = boot_msrs(supported);
    let msrs = Msrs::from_entries(&entries).expect("fewer MSRs than a KVM MSR list holds");
    let written = vcpu
        .set_msrs(&msrs)
        .map_err(|e| RegsError::Kvm("MSRs", e))?;
    if written < entries.len() {
        log::warn!(
            "KVM refused MSR {:#x}; the guest starts with its reset value",
            { entries[written].index }
        );
    }
    Ok(())
}

fn set_lvt_mode(lapic: &mut kvm_lapic_state, offset: usize, mode: u32) {
    let bytes: Vec<u8> = lapic.regs[offset..offset + 4]
        .iter()
        .map(|b| *b as u8)
        .collect();
    let value = u32::from_le_bytes(bytes.try_into().expect("4 bytes"));
    let value = (value & !0x700) | (mode << 8);
    for (dst, src) in lapic.regs[offset..offset + 4]
        .iter_mut()
        .zip(value.to_le_bytes())
    {
        *dst = src as _;
    }
}

/// Wires LINT0 to the PIC (ExtINT) and LINT1 to NMI, as a PC firmware does.
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let mut lapic = vcpu
        .get_lapic()
        .map_err(|e| RegsError::Kvm("local APIC", e))?;
    set_lvt_mode(&mut lapic, APIC_LVT_LINT0, APIC_MODE_EXTINT);
    set_lvt_mode(&mut lapic, APIC_LVT_LINT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic)
        .map_err(|e| RegsError::Kvm("local APIC", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_decode_to_flat_long_mode_segments() {
        let gdt = boot_gdt();
        assert_eq!(gdt[1], 0x00af_9b00_0000_ffff);
        assert_eq!(gdt[2], 0x00cf_9300_0000_ffff);

        let code = segment_from_gdt(gdt[1], CODE_SELECTOR);
        assert_eq!(
            (code.base, code.limit, code.l, code.db, code.g),
            (0, 0xffff_ffff, 1, 0, 1)
        );
        assert_eq!((code.type_, code.s, code.present, code.dpl), (0xb, 1, 1, 0));

        let data = segment_from_gdt(gdt[2], DATA_SELECTOR);
        assert_eq!((data.l, data.db, data.type_, data.unusable), (0, 1, 3, 0));

        let tss = segment_from_gdt(gdt[3], TSS_SELECTOR);
        assert_eq!((tss.type_, tss.s, tss.present), (0xb, 0, 1));
    }

    #[test]
    fn long_mode_control_registers() {
        let mut sregs = kvm_sregs::default();
        long_mode_sregs(&mut sregs);
        assert_eq!(
            sregs.cr0 & (X86_CR0_PE | X86_CR0_PG),
            X86_CR0_PE | X86_CR0_PG
        );
        assert_ne!(sregs.cr4 & X86_CR4_PAE, 0);
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(sregs.cr3, 0x9000);
        assert_eq!(sregs.gdt.limit, 31);
    }

    #[test]
    fn page_tables_identity_map_the_first_gib() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_boot_structures(&mem).unwrap();
        assert_eq!(mem.read_obj::<u64>(PML4_START).unwrap(), 0xa003);
        assert_eq!(mem.read_obj::<u64>(PDPTE_START).unwrap(), 0xb003);
        assert_eq!(mem.read_obj::<u64>(PDE_START).unwrap(), 0x83);
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(PDE_START.0 + 511 * 8))
                .unwrap(),
            0x3fe0_0083
        );
    }

    #[test]
    fn msrs_are_filtered_by_what_kvm_supports() {
        let msrs = boot_msrs(&[MSR_LSTAR, MSR_MTRR_DEF_TYPE]);
        let got: Vec<(u32, u64)> = msrs.iter().map(|m| (m.index, m.data)).collect();
        assert_eq!(got, vec![(MSR_LSTAR, 0), (MSR_MTRR_DEF_TYPE, 0x806)]);
    }
}
