// SPDX-License-Identifier: Apache-2.0
//! x86-64 machine set-up: the guest-physical memory map, the boot protocol, firmware tables
//! and the initial vCPU state.

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod kernel;
pub mod layout;
pub mod regs;
