// SPDX-License-Identifier: Apache-2.0
//! Returning consumed command buffers to the guest through the release ring.
//!
//! This follows QEMU's scheme (fact sheet section 13): the ring slot at `prod` is an
//! accumulator for a linked list that lives in guest memory. The first released resource's id
//! goes into that slot; each further id is written over the previous resource's
//! QXLReleaseInfo (which now means `next`), and the newest resource's QXLReleaseInfo is
//! zeroed to end the list. Pushing the slot (advancing `prod`) hands the whole list to the
//! guest. One slot always stays free as the accumulator, so the ring counts as full at
//! `num_items - 1` entries; while it is full the list simply grows in guest memory.

use super::error::QxlGuestError;
use super::memory::{GuestBars, GuestPtr};
use super::regs::QXL_INTERRUPT_DISPLAY;
use super::ring::Ring;

/// Releases collected before the list is pushed without waiting for a flush.
pub const RELEASE_BATCH: u32 = 32;

/// A resource the guest is waiting to get back: where its QXLReleaseInfo is and the id the
/// guest stored there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReleaseToken {
    /// The QXLReleaseInfo (first 8 bytes of the command body).
    pub info: GuestPtr,
    /// The id read from it when the command was taken.
    pub id: u64,
}

/// The release list being collected and the ring it goes to.
#[derive(Debug)]
pub struct ReleaseList {
    ring: Ring,
    tail: Option<GuestPtr>,
    pending: u32,
}

impl ReleaseList {
    /// Creates an empty list for `ring`.
    pub fn new(ring: Ring) -> Self {
        ReleaseList {
            ring,
            tail: None,
            pending: 0,
        }
    }

    /// Re-initialises the ring header and the accumulator slot, and forgets the list.
    pub fn reset(&mut self, bars: &GuestBars) -> Result<(), QxlGuestError> {
        self.tail = None;
        self.pending = 0;
        self.ring.init(bars)?;
        bars.write_u64(self.ring.item(0), 0)
    }

    /// Releases collected and not yet pushed (the ring was full when they were flushed).
    pub fn pending(&self) -> u32 {
        self.pending
    }

    /// Returns whether the guest has consumed every pushed entry.
    pub fn ring_is_empty(&self, bars: &GuestBars) -> Result<bool, QxlGuestError> {
        Ok(self.ring.counters(bars)?.used() == 0)
    }

    /// Appends `token` to the list; pushes it once [`RELEASE_BATCH`] are collected. Returns
    /// the interrupt bits to raise.
    pub fn release(&mut self, bars: &GuestBars, token: ReleaseToken) -> Result<u32, QxlGuestError> {
        let link = match self.tail {
            Some(tail) => tail,
            None => self.ring.item(self.ring.counters(bars)?.prod),
        };
        bars.write_u64(link, token.id)?;
        bars.write_u64(token.info, 0)?;
        self.tail = Some(token.info);
        self.pending += 1;

        if self.pending >= RELEASE_BATCH {
            return self.flush(bars);
        }
        Ok(0)
    }

    /// Pushes the list if it holds anything and the ring has room. Returns the interrupt bits
    /// to raise.
    pub fn flush(&mut self, bars: &GuestBars) -> Result<u32, QxlGuestError> {
        if self.pending == 0 {
            return Ok(0);
        }
        let counters = self.ring.counters(bars)?;
        if counters.used() + 1 >= self.ring.num_items() {
            return Ok(0);
        }

        let notify = self.ring.push(bars, counters)?;
        bars.write_u64(self.ring.item(counters.prod.wrapping_add(1)), 0)?;
        self.tail = None;
        self.pending = 0;

        Ok(if notify { QXL_INTERRUPT_DISPLAY } else { 0 })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use vm_memory::mmap::MmapRegion;

    use super::*;
    use crate::qxl::memory::Bar;
    use crate::qxl::regs::{RING_CONS, RING_NOTIFY_ON_PROD, RING_PROD};

    const HDR: GuestPtr = GuestPtr::new(Bar::Ram, 0);

    fn setup() -> (GuestBars, ReleaseList) {
        let ram = Arc::new(MmapRegion::new(8192).unwrap());
        let vram = Arc::new(MmapRegion::new(4096).unwrap());
        let bars = GuestBars::new(ram, vram);
        let mut list = ReleaseList::new(Ring::new("release", HDR, 8, 8));
        list.reset(&bars).unwrap();
        (bars, list)
    }

    /// Releases id `id`, whose QXLReleaseInfo sits at 1024 + 8 * id, after filling the info
    /// with the id as a guest would.
    fn release(bars: &GuestBars, list: &mut ReleaseList, id: u64) -> u32 {
        let info = GuestPtr::new(Bar::Ram, 1024 + 8 * id);
        bars.write_u64(info, id).unwrap();
        list.release(bars, ReleaseToken { info, id }).unwrap()
    }

    /// Consumes the ring like Linux's garbage collector and returns the ids in order.
    fn collect(bars: &GuestBars) -> Vec<u64> {
        let info_of: HashMap<u64, GuestPtr> = (1..200)
            .map(|id| (id, GuestPtr::new(Bar::Ram, 1024 + 8 * id)))
            .collect();
        let field = |f| HDR.add(f).unwrap();
        let prod = bars.read_u32(field(RING_PROD)).unwrap();
        let mut cons = bars.read_u32(field(RING_CONS)).unwrap();
        let mut ids = Vec::new();
        while cons != prod {
            let slot = HDR.add(20 + 8 * u64::from(cons & 7)).unwrap();
            let mut id = bars.read_u64(slot).unwrap();
            while id != 0 {
                ids.push(id);
                id = bars.read_u64(info_of[&id]).unwrap();
            }
            cons = cons.wrapping_add(1);
        }
        bars.write_u32(field(RING_CONS), cons).unwrap();
        ids
    }

    #[test]
    fn list_is_pushed_on_flush_and_walked_in_order() {
        let (bars, mut list) = setup();

        for id in 1..=3 {
            assert_eq!(release(&bars, &mut list, id), 0);
        }
        assert!(collect(&bars).is_empty());

        assert_eq!(list.flush(&bars).unwrap(), QXL_INTERRUPT_DISPLAY);
        assert_eq!(list.pending(), 0);
        assert_eq!(collect(&bars), [1, 2, 3]);
        assert_eq!(list.flush(&bars).unwrap(), 0);
    }

    #[test]
    fn a_batch_is_pushed_without_flush() {
        let (bars, mut list) = setup();
        bars.write_u32(HDR.add(RING_NOTIFY_ON_PROD).unwrap(), 5)
            .unwrap();

        for id in 1..RELEASE_BATCH {
            release(&bars, &mut list, u64::from(id));
        }
        assert_eq!(list.pending(), RELEASE_BATCH - 1);
        assert_eq!(release(&bars, &mut list, 32), 0);
        assert_eq!(list.pending(), 0);

        let ids = collect(&bars);
        assert_eq!(ids, (1..=32).collect::<Vec<u64>>());
    }

    #[test]
    fn full_ring_keeps_the_list_growing() {
        let (bars, mut list) = setup();

        for id in 1..=7 {
            release(&bars, &mut list, id);
            list.flush(&bars).unwrap();
        }
        assert_eq!(list.pending(), 0);
        release(&bars, &mut list, 8);
        release(&bars, &mut list, 9);
        assert_eq!(list.flush(&bars).unwrap(), 0);
        assert_eq!(list.pending(), 2);

        assert_eq!(collect(&bars), (1..=7).collect::<Vec<u64>>());
        list.flush(&bars).unwrap();
        assert_eq!(collect(&bars), [8, 9]);
    }
}
