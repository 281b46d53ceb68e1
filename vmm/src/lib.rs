// SPDX-License-Identifier: Apache-2.0
//! `vmm`: a KVM virtual machine monitor that boots an unmodified Linux kernel.
//!
//! Threads: `main` parses options, builds the VM and then runs the event loop (serial input,
//! the exit event); one `vcpu{N}` thread per vCPU; `serial-out` writes guest console output.
//! There is no VM-wide lock: each device has its own, and the address maps are immutable once
//! the vCPUs start.

mod api;
pub mod arch;
pub mod builder;
pub mod config;
mod display;
mod exit;
pub mod irq;
mod pause;
mod qmp_input;
mod serial_io;
mod spice;
mod terminal;
mod vcpu;

pub use builder::{run, RunOutcome, VmmError};
