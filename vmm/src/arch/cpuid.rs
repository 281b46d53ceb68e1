// SPDX-License-Identifier: Apache-2.0
//! The CPUID each vCPU sees: what KVM supports on this host, with the topology and APIC IDs
//! filled in per vCPU so that the guest's view matches the MADT.
//!
//! The topology is one socket with one thread per core and as many cores as vCPUs.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

/// Leaf 1 EBX: initial APIC ID (bits 31-24), logical processor count (23-16).
const LEAF1_EBX_APIC_ID_SHIFT: u32 = 24;
const LEAF1_EBX_COUNT_SHIFT: u32 = 16;
/// Leaf 1 EDX bit 28: HTT, the count in EBX is valid.
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Leaf 1 ECX bit 31: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 0xb/0x1f ECX bits 15-8: level type (1 = SMT, 2 = core).
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Number of bits needed to number `count` items.
fn id_bits(count: u32) -> u32 {
    count.next_power_of_two().trailing_zeros()
}

/// Adjusts `entry` for vCPU `id` out of `count`.
fn patch_entry(entry: &mut kvm_cpuid_entry2, id: u8, count: u8) {
    let (id, count) = (u32::from(id), u32::from(count));
    match entry.function {
        0x1 => {
            entry.ebx = (entry.ebx & 0xffff)
                | (id << LEAF1_EBX_APIC_ID_SHIFT)
                | (count.next_power_of_two() << LEAF1_EBX_COUNT_SHIFT);
            entry.edx |= LEAF1_EDX_HTT;
            entry.ecx |= LEAF1_ECX_HYPERVISOR;
        }
        0x4 => {
            // EAX bits 31-26: cores per package - 1; bits 25-14: threads sharing this cache - 1.
            let cores = count.next_power_of_two() - 1;
            entry.eax = (entry.eax & 0x3fff) | (cores << 26);
            if entry.eax & 0xe0 >= 0x60 {
                entry.eax |= cores << 14;
            }
        }
        0xb | 0x1f => {
            let (shift, width, level) = match entry.index {
                0 => (0, 1, LEVEL_TYPE_SMT),
                1 => (id_bits(count), count, LEVEL_TYPE_CORE),
                _ => (0, 0, 0),
            };
            entry.eax = shift;
            entry.ebx = width;
            entry.ecx = (level << 8) | entry.index;
            entry.edx = id;
        }
        0x8000_0008 => {
            // ECX bits 7-0: cores - 1; bits 15-12: APIC ID bits for the core ID.
            entry.ecx = (entry.ecx & !0xf0ff) | (id_bits(count) << 12) | (count - 1);
        }
        0x8000_001e => {
            entry.eax = id;
            entry.ebx = (entry.ebx & !0xff) | id;
        }
        _ => {}
    }
}

/// Returns `supported` adjusted for vCPU `id` out of `count`.
pub fn vcpu_cpuid(supported: &CpuId, id: u8, count: u8) -> CpuId {
    let mut cpuid = supported.clone();
    for entry in cpuid.as_mut_slice() {
        patch_entry(entry, id, count);
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    #[test]
    fn leaf_1_carries_apic_id_count_and_hypervisor_bit() {
        let mut e = entry(1, 0);
        e.ebx = 0x0000_0800;
        patch_entry(&mut e, 2, 3);
        assert_eq!(e.ebx, 0x0204_0800);
        assert_ne!(e.edx & LEAF1_EDX_HTT, 0);
        assert_ne!(e.ecx & LEAF1_ECX_HYPERVISOR, 0);
    }

    #[test]
    fn extended_topology_levels() {
        let mut smt = entry(0xb, 0);
        let mut core = entry(0xb, 1);
        let mut end = entry(0xb, 2);
        for e in [&mut smt, &mut core, &mut end] {
            patch_entry(e, 5, 6);
        }
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 5));
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (3, 6, 0x201, 5));
        assert_eq!((end.eax, end.ebx, end.ecx, end.edx), (0, 0, 2, 5));
    }

    #[test]
    fn amd_core_count() {
        let mut e = entry(0x8000_0008, 0);
        e.ecx = 0xffff_ffff;
        patch_entry(&mut e, 0, 4);
        assert_eq!(e.ecx & 0xf0ff, 0x2003);
    }

    #[test]
    fn one_vcpu_is_a_single_core() {
        let mut e = entry(1, 0);
        patch_entry(&mut e, 0, 1);
        assert_eq!(e.ebx >> 16, 0x0001);
        let mut e = entry(0x4, 0);
        patch_entry(&mut e, 0, 1);
        assert_eq!(e.eax >> 26, 0);
    }
}
