// SPDX-License-Identifier: Apache-2.0
//! Bounds-checked access to the two memory BARs the guest shares with the device.
//!
//! The guest may write to both BARs at any time, so nothing here hands out Rust references
//! into them: every access is a volatile copy (or an atomic for ring counters) through
//! vm-memory, checked against the BAR size.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use vm_memory::mmap::MmapRegion;
use vm_memory::{Bytes, VolatileMemory, VolatileSlice};

use super::error::QxlGuestError;

/// One of the memory BARs the engine reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bar {
    /// BAR0: surface0 area, guest pages and the RAM header.
    Ram,
    /// BAR1: surface memory.
    Vram,
}

/// A byte offset inside a BAR: what a QXLPHYSICAL translates to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GuestPtr {
    /// The BAR.
    pub bar: Bar,
    /// Offset from the start of the BAR.
    pub offset: u64,
}

impl GuestPtr {
    /// Creates a pointer to `offset` in `bar`.
    pub const fn new(bar: Bar, offset: u64) -> Self {
        GuestPtr { bar, offset }
    }

    /// Returns the pointer `n` bytes further, `None` on overflow.
    pub fn add(self, n: u64) -> Option<GuestPtr> {
        Some(GuestPtr::new(self.bar, self.offset.checked_add(n)?))
    }
}

/// Reads a little-endian u16 at `off` of a local copy.
pub fn le_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

/// Reads a little-endian u32 at `off` of a local copy.
pub fn le_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Reads a little-endian i32 at `off` of a local copy.
pub fn le_i32(b: &[u8], off: usize) -> i32 {
    i32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Reads a little-endian u64 at `off` of a local copy.
pub fn le_u64(b: &[u8], off: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(v)
}

/// The RAM and VRAM BARs as host memory.
#[derive(Clone, Debug)]
pub struct GuestBars {
    ram: Arc<MmapRegion<()>>,
    vram: Arc<MmapRegion<()>>,
}

impl GuestBars {
    /// Wraps the two regions.
    pub fn new(ram: Arc<MmapRegion<()>>, vram: Arc<MmapRegion<()>>) -> Self {
        GuestBars { ram, vram }
    }

    fn region(&self, bar: Bar) -> &MmapRegion<()> {
        match bar {
            Bar::Ram => &self.ram,
            Bar::Vram => &self.vram,
        }
    }

    /// Size of `bar` in bytes.
    pub fn size(&self, bar: Bar) -> u64 {
        // usize always fits in u64 on the hosts KVM runs on.
        self.region(bar).len() as u64
    }

    /// Returns a volatile view of `[offset, offset + len)` of `bar`.
    pub fn slice(
        &self,
        bar: Bar,
        offset: u64,
        len: u64,
    ) -> Result<VolatileSlice<'_>, QxlGuestError> {
        let outside = || QxlGuestError::OutsideBar { offset, len };
        let off = usize::try_from(offset).map_err(|_| outside())?;
        let count = usize::try_from(len).map_err(|_| outside())?;
        self.region(bar)
            .get_slice(off, count)
            .map_err(|_| outside())
    }

    /// Copies `buf.len()` bytes at `ptr` into `buf`.
    pub fn read(&self, ptr: GuestPtr, buf: &mut [u8]) -> Result<(), QxlGuestError> {
        let slice = self.slice(ptr.bar, ptr.offset, buf.len() as u64)?;
        slice.copy_to(buf);
        Ok(())
    }

    /// Copies `buf` to `ptr`.
    pub fn write(&self, ptr: GuestPtr, buf: &[u8]) -> Result<(), QxlGuestError> {
        let slice = self.slice(ptr.bar, ptr.offset, buf.len() as u64)?;
        slice.copy_from(buf);
        Ok(())
    }

    /// Reads the little-endian u32 at `ptr`.
    pub fn read_u32(&self, ptr: GuestPtr) -> Result<u32, QxlGuestError> {
        let mut b = [0u8; 4];
        self.read(ptr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads the little-endian u64 at `ptr`.
    pub fn read_u64(&self, ptr: GuestPtr) -> Result<u64, QxlGuestError> {
        let mut b = [0u8; 8];
        self.read(ptr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes `value` little-endian at `ptr`.
    pub fn write_u32(&self, ptr: GuestPtr, value: u32) -> Result<(), QxlGuestError> {
        self.write(ptr, &value.to_le_bytes())
    }

    /// Writes `value` little-endian at `ptr`.
    pub fn write_u64(&self, ptr: GuestPtr, value: u64) -> Result<(), QxlGuestError> {
        self.write(ptr, &value.to_le_bytes())
    }

    /// Atomically loads the aligned little-endian u32 at `ptr` (ring counters).
    pub fn load_u32(&self, ptr: GuestPtr) -> Result<u32, QxlGuestError> {
        let slice = self.slice(ptr.bar, ptr.offset, 4)?;
        let value: u32 =
            slice
                .load(0, Ordering::SeqCst)
                .map_err(|_| QxlGuestError::OutsideBar {
                    offset: ptr.offset,
                    len: 4,
                })?;
        Ok(u32::from_le(value))
    }

    /// Atomically stores `value` little-endian into the aligned u32 at `ptr`.
    pub fn store_u32(&self, ptr: GuestPtr, value: u32) -> Result<(), QxlGuestError> {
        let slice = self.slice(ptr.bar, ptr.offset, 4)?;
        slice
            .store(value.to_le(), 0, Ordering::SeqCst)
            .map_err(|_| QxlGuestError::OutsideBar {
                offset: ptr.offset,
                len: 4,
            })
    }

    /// Sets `len` bytes at `ptr` to `byte`, a bounded block at a time.
    pub fn fill(&self, ptr: GuestPtr, len: u64, byte: u8) -> Result<(), QxlGuestError> {
        const BLOCK: usize = 64 << 10;
        let slice = self.slice(ptr.bar, ptr.offset, len)?;
        let block = vec![byte; BLOCK.min(slice.len())];
        let mut done = 0;
        while done < slice.len() {
            let n = block.len().min(slice.len() - done);
            let part = slice
                .subslice(done, n)
                .map_err(|_| QxlGuestError::OutsideBar {
                    offset: ptr.offset,
                    len,
                })?;
            part.copy_from(&block[..n]);
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars() -> GuestBars {
        let ram = Arc::new(MmapRegion::new(8192).unwrap());
        let vram = Arc::new(MmapRegion::new(4096).unwrap());
        GuestBars::new(ram, vram)
    }

    #[test]
    fn accesses_are_bounded_by_the_bar() {
        let bars = bars();
        let end = GuestPtr::new(Bar::Vram, 4092);

        bars.write_u32(end, 0xdead_beef).unwrap();
        assert_eq!(bars.read_u32(end).unwrap(), 0xdead_beef);
        assert_eq!(bars.read_u32(GuestPtr::new(Bar::Ram, 4092)).unwrap(), 0);

        assert!(bars.read_u64(end).is_err());
        assert!(bars.write_u32(GuestPtr::new(Bar::Vram, 4093), 1).is_err());
        assert!(bars
            .read_u32(GuestPtr::new(Bar::Ram, u64::MAX - 1))
            .is_err());
        assert!(bars.slice(Bar::Ram, 8192, 0).is_ok());
        assert!(bars.slice(Bar::Ram, 1, u64::MAX).is_err());
    }

    #[test]
    fn atomics_and_fill() {
        let bars = bars();
        let p = GuestPtr::new(Bar::Ram, 4100);

        bars.store_u32(p, 7).unwrap();
        assert_eq!(bars.load_u32(p).unwrap(), 7);
        assert!(bars.load_u32(GuestPtr::new(Bar::Ram, 4101)).is_err());

        bars.fill(GuestPtr::new(Bar::Ram, 1), 8190, 0xab).unwrap();
        let mut b = [0u8; 3];
        bars.read(GuestPtr::new(Bar::Ram, 0), &mut b).unwrap();
        assert_eq!(b, [0, 0xab, 0xab]);
        assert!(bars.fill(GuestPtr::new(Bar::Ram, 1), 8192, 0).is_err());
    }

    #[test]
    fn le_helpers() {
        let b = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(le_u16(&b, 1), 0x0302);
        assert_eq!(le_u32(&b, 0), 0x0403_0201);
        assert_eq!(le_u64(&b, 1), 0x0908_0706_0504_0302);
        assert_eq!(le_i32(&[0xff; 4], 0), -1);
    }
}
