// SPDX-License-Identifier: Apache-2.0
//! The QXL paravirtual display device. This module holds its engine: everything that
//! interprets guest memory (memory slots, rings, command bodies, surfaces, software
//! rendering, the cursor and the release ring), with no threads, no KVM and no PCI.

mod chunk;
mod command;
mod config;
mod cursor;
mod draw;
mod engine;
mod error;
mod image;
mod listener;
mod memory;
mod memslot;
mod monitors;
mod rect;
pub mod regs;
mod release;
mod render;
mod ring;
mod surface;
#[cfg(test)]
mod testutil;

pub use cursor::{CursorShape, CursorState, MAX_CURSOR_DIM};
pub use engine::{
    QxlConfig, QxlConfigError, QxlEngine, QxlEngineStats, RingProgress, DRAIN_BUDGET,
};
pub use error::QxlGuestError;
pub use listener::DisplayListener;
pub use monitors::{MonitorHead, MonitorsConfig, MAX_HEAD_VALUE, MAX_MONITORS};
pub use rect::Rect;
pub use surface::{SurfaceInfo, MAX_SURFACE_DIM};

// The PCI function, its ROM and the display thread that drives the engine.
mod device;
mod rom;
pub mod worker;

pub use device::{
    port_name, Completion, PortFigures, QxlBarAddresses, QxlIo, QxlPci, QxlPortStats, QxlRequest,
    QxlRequestKind, QxlRom, QxlShared,
};
pub use rom::build_rom;
