// SPDX-License-Identifier: Apache-2.0
//! The port I/O and MMIO address maps that vCPU exits are dispatched through.
//!
//! The map is read-mostly: it changes only when the guest moves or disables a PCI BAR. A
//! lookup takes the map's read lock just long enough to clone the device's handle, then
//! releases it before locking the device, so a device may itself change the map (a PCI
//! configuration write that moves a BAR) without deadlocking.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

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

/// A device that handles accesses through a shared reference, without a bus-level lock.
///
/// For devices whose accesses may block the calling vCPU on purpose (a synchronous device
/// request): no lock is held while they wait, so other vCPUs reach the device meanwhile.
pub trait SharedBusDevice: Send + Sync {
    /// Handles a read of `data.len()` bytes at `offset`.
    fn read(&self, base: u64, offset: u64, data: &mut [u8]);

    /// Handles a write of `data` at `offset`.
    fn write(&self, base: u64, offset: u64, data: &[u8]);

    /// Told, after `write` returned, how long the vCPU has been out of the guest for it: from
    /// the return of `KVM_RUN` to now, just before the vCPU re-enters. For devices that report
    /// their vCPU-side cost; the default ignores it.
    fn write_done(&self, _offset: u64, _since_exit: Duration) {}
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

/// A device on the bus, with or without a lock around it.
#[derive(Clone)]
enum BusEntry {
    Locked(Arc<Mutex<dyn BusDevice>>),
    Shared(Arc<dyn SharedBusDevice>),
}

struct BusRange {
    len: u64,
    device: BusEntry,
}

/// An address map from ranges to devices.
#[derive(Default)]
pub struct Bus {
    ranges: RwLock<BTreeMap<u64, BusRange>>,
}

impl Bus {
    /// Creates an empty bus.
    pub fn new() -> Self {
        Bus::default()
    }

    /// Maps `device` at `[base, base + len)`; each access locks it.
    pub fn insert(
        &self,
        device: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), BusError> {
        self.insert_entry(BusEntry::Locked(device), base, len)
    }

    /// Maps a [`SharedBusDevice`] at `[base, base + len)`.
    pub fn insert_shared(
        &self,
        device: Arc<dyn SharedBusDevice>,
        base: u64,
        len: u64,
    ) -> Result<(), BusError> {
        self.insert_entry(BusEntry::Shared(device), base, len)
    }

    fn insert_entry(&self, device: BusEntry, base: u64, len: u64) -> Result<(), BusError> {
        let end = base.checked_add(len).filter(|_| len > 0);
        let end = end.ok_or(BusError::InvalidRange { base, len })?;

        let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
        let before = ranges.range(..end).next_back();
        if before.is_some_and(|(b, r)| b + r.len > base) {
            return Err(BusError::Overlap { base, len });
        }

        ranges.insert(base, BusRange { len, device });
        Ok(())
    }

    /// Unmaps the range that starts at `base`; returns whether there was one.
    pub fn remove(&self, base: u64) -> bool {
        let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
        ranges.remove(&base).is_some()
    }

    /// Unmaps every device. Devices that map themselves (PCI BARs) hold the bus, so a VM's
    /// buses must be cleared when it ends for its devices to be dropped.
    pub fn clear(&self) {
        let ranges = std::mem::take(&mut *self.ranges.write().unwrap_or_else(|e| e.into_inner()));
        drop(ranges);
    }

    /// Finds the device covering `[addr, addr + size)` and returns its base and a handle.
    fn find(&self, addr: u64, size: usize) -> Option<(u64, BusEntry)> {
        let ranges = self.ranges.read().unwrap_or_else(|e| e.into_inner());
        let (base, range) = ranges.range(..=addr).next_back()?;
        let end = addr.checked_add(size as u64)?;
        (end <= base + range.len).then(|| (*base, range.device.clone()))
    }

    /// Reads from the device mapped at `addr`. Returns false, leaving `data` as it is, when no
    /// device covers the whole access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        let Some((base, device)) = self.find(addr, data.len()) else {
            return false;
        };

        match device {
            // A poisoned lock means a device panicked earlier; keep serving it rather than
            // taking the vCPU down with it.
            BusEntry::Locked(device) => {
                let mut device = device.lock().unwrap_or_else(|e| e.into_inner());
                device.read(base, addr - base, data);
            }
            BusEntry::Shared(device) => device.read(base, addr - base, data),
        }
        true
    }

    /// Writes to the device mapped at `addr`. Returns false when no device covers the access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        self.write_exit(addr, data, None)
    }

    /// Writes like [`Bus::write`] for a vCPU that left the guest at `exited`, and tells a
    /// shared device how long the vCPU has then been out ([`SharedBusDevice::write_done`]).
    pub fn write_exit(&self, addr: u64, data: &[u8], exited: Option<Instant>) -> bool {
        let Some((base, device)) = self.find(addr, data.len()) else {
            return false;
        };

        match device {
            BusEntry::Locked(device) => {
                let mut device = device.lock().unwrap_or_else(|e| e.into_inner());
                device.write(base, addr - base, data);
            }
            BusEntry::Shared(device) => {
                device.write(base, addr - base, data);
                if let Some(exited) = exited {
                    device.write_done(addr - base, exited.elapsed());
                }
            }
        }
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
        let bus = Bus::new();
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();

        let mut data = [0u8; 1];
        assert!(bus.read(0x3fd, &mut data));
        assert_eq!(data, [5]);

        assert!(bus.write(0x3f8, &[0x41]));
        assert_eq!(dev.lock().unwrap().last, Some((0x3f8, 0, vec![0x41])));
    }

    #[test]
    fn accesses_outside_or_across_ranges_are_not_handled() {
        let bus = Bus::new();
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
        let bus = Bus::new();
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

    /// A device that moves itself while handling an access, as a PCI BAR write does.
    struct Mover {
        bus: Arc<Bus>,
        me: Option<Arc<Mutex<dyn BusDevice>>>,
    }

    impl BusDevice for Mover {
        fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
            data.fill(0x5a);
        }

        fn write(&mut self, base: u64, _offset: u64, data: &[u8]) {
            assert!(self.bus.remove(base));
            let me = self.me.clone().unwrap();
            self.bus.insert(me, u64::from(data[0]) << 8, 4).unwrap();
        }
    }

    #[test]
    fn a_device_can_move_itself_during_an_access() {
        let bus = Arc::new(Bus::new());
        let mover = Arc::new(Mutex::new(Mover {
            bus: bus.clone(),
            me: None,
        }));
        mover.lock().unwrap().me = Some(mover.clone());
        bus.insert(mover.clone(), 0x100, 4).unwrap();

        assert!(bus.write(0x100, &[0x20]));
        let mut data = [0u8];
        assert!(!bus.read(0x100, &mut data));
        assert!(bus.read(0x2000, &mut data));
        assert_eq!(data, [0x5a]);
        mover.lock().unwrap().me = None;
    }
}
