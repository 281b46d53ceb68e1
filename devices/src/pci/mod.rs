// SPDX-License-Identifier: Apache-2.0
//! PCI bus 0 behind a host bridge, reached through configuration mechanism #1 (ports 0xcf8 and
//! 0xcfc-0xcff) and through ECAM (memory-mapped configuration space, announced in the MCFG).

mod configuration;
mod msi;
mod root;

pub use configuration::{
    BarKind, BarRegion, PciConfiguration, COMMAND_BUS_MASTER, COMMAND_INTX_DISABLE, COMMAND_IO,
    COMMAND_MEMORY,
};
pub use msi::{MsiCapability, MsiMessage, MsiRouter, PciInterrupt};
pub use root::{
    BarMapper, PciDevice, PciRoot, ECAM_SIZE_BUS0, PCI_CONFIG_IO_LEN, PCI_CONFIG_IO_PORT,
};
