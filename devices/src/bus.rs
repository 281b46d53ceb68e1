// SPDX-License-Identifier: Apache-2.0
//! The port I/O and MMIO address maps that vCPU exits are dispatched through.
//!
//! A [`Bus`] is built once, before the vCPUs start, and is immutable afterwards, so looking up
//! a device on an exit takes no lock: only the device's own mutex is taken, for the access.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use thiserror::Error;

/// A device that answers reads and writes on a bus.
///
/// `offset` is relative to the base of the range the device was inserted at; `base` is that
/// base, for devices that are inserted at several ranges.
pub trait BusDevice: Send {
    /// Handles a read of `data.len()` bytes at `offset`.
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]);

    /// Handles a write of `data` at `offset`.
    fn write(&mut self, base: u64, offset: u64, data: &[u8]);
}

/// Errors when building a bus.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range is empty or wraps around the address space.
    #[error("invalid bus range {base:#x}+{len:#x}")]
    InvalidRange {
        /// Base of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
    },
    /// The new range overlaps one already inserted.
    #[error("bus range {base:#x}+{len:#x} overlaps another device")]
    Overlap {
        /// Base of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
    },
}

struct BusRange {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// An address map from ranges to devices.
#[derive(Default)]
pub struct Bus {
    ranges: BTreeMap<u64, BusRange>,
}

impl Bus {
    /// Creates an empty bus.
    pub fn new() -> Self {
        Bus::default()
    }

    /// Maps `device` at `[base, base + len)`.
    pub fn insert(
        &mut self,
        device: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), BusError> {
        let end = base.checked_add(len).filter(|_| len > 0);
        let end = end.ok_or(BusError::InvalidRange { base, len })?;

        let before = self.ranges.range(..end).next_back();
        if before.is_some_and(|(b, r)| b + r.len > base) {
            return Err(BusError::Overlap { base, len });
        }

        self.ranges.insert(base, BusRange { len, device });
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, &BusRange)> {
        let (base, range) = self.ranges.range(..=addr).next_back()?;
        let end = addr.checked_add(size as u64)?;
        (end <= base + range.len).then_some((*base, range))
    }

    /// Reads from the device mapped at `addr`. Returns false, leaving `data` as it is, when no
    /// device covers the whole access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        let Some((base, range)) = self.find(addr, data.len()) else {
            return false;
        };

        // A poisoned lock means a device panicked earlier; keep serving it rather than
        // taking the vCPU down with it.
        let mut device = range.device.lock().unwrap_or_else(|e| e.into_inner());
        device.read(base, addr - base, data);
        true
    }

    /// Writes to the device mapped at `addr`. Returns false when no device covers the access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        let Some((base, range)) = self.find(addr, data.len()) else {
            return false;
        };

        let mut device = range.device.lock().unwrap_or_else(|e| e.into_inner());
        device.write(base, addr - base, data);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder {
        last: Option<(u64, u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
            data.fill(u8::try_from(offset).unwrap_or(0xff));
        }

        fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
            self.last = Some((base, offset, data.to_vec()));
        }
    }

    fn recorder() -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder { last: None }))
    }

    #[test]
    fn dispatches_by_range_with_offsets() {
        let dev = recorder();
        let mut bus = Bus::new();
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();

        let mut data = [0u8; 1];
        assert!(bus.read(0x3fd, &mut data));
        assert_eq!(data, [5]);

        assert!(bus.write(0x3f8, &[0x41]));
        assert_eq!(dev.lock().unwrap().last, Some((0x3f8, 0, vec![0x41])));
    }

    #[test]
    fn accesses_outside_or_across_ranges_are_not_handled() {
        let mut bus = Bus::new();
        bus.insert(recorder(), 0x100, 4).unwrap();

        let mut data = [0xaa; 4];
        assert!(!bus.read(0xff, &mut data[..1]));
        assert!(!bus.read(0x104, &mut data[..1]));
        assert!(!bus.read(0x102, &mut data));
        assert_eq!(data, [0xaa; 4]);
        assert!(!bus.write(u64::MAX, &[0, 0]));
    }

    #[test]
    fn overlapping_and_empty_ranges_are_refused() {
        let mut bus = Bus::new();
        bus.insert(recorder(), 0x100, 0x10).unwrap();

        assert_eq!(
            bus.insert(recorder(), 0x10f, 1),
            Err(BusError::Overlap {
                base: 0x10f,
                len: 1
            })
        );
        assert_eq!(
            bus.insert(recorder(), 0xf8, 0x10),
            Err(BusError::Overlap {
                base: 0xf8,
                len: 0x10
            })
        );
        assert_eq!(
            bus.insert(recorder(), 0x200, 0),
            Err(BusError::InvalidRange {
                base: 0x200,
                len: 0
            })
        );
        assert!(bus.insert(recorder(), u64::MAX, 2).is_err());
        bus.insert(recorder(), 0x110, 1).unwrap();
        bus.insert(recorder(), 0xf0, 0x10).unwrap();
    }
}
