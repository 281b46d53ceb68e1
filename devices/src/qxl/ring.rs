// SPDX-License-Identifier: Apache-2.0
//! The SPICE ring protocol on the rings inside the RAM header.
//!
//! A ring is a header of five u32 (`num_items`, `prod`, `notify_on_prod`, `cons`,
//! `notify_on_cons`) followed by `num_items` items. `prod` and `cons` run freely and wrap at
//! 2^32; an item's slot is the counter masked by `num_items - 1`. The guest can rewrite the
//! header at any time, so each operation reloads it and checks it before use: a `num_items`
//! other than the expected power of two, or more items in flight than slots, is a guest bug.

use std::sync::atomic::{fence, Ordering};

use super::error::QxlGuestError;
use super::memory::{GuestBars, GuestPtr};
use super::regs::{
    RING_CONS, RING_ITEMS, RING_NOTIFY_ON_CONS, RING_NOTIFY_ON_PROD, RING_NUM_ITEMS, RING_PROD,
};

/// Where a ring lives and what it holds.
#[derive(Clone, Copy, Debug)]
pub struct Ring {
    name: &'static str,
    header: GuestPtr,
    num_items: u32,
    item_size: u64,
}

/// Counters read from a ring header that passed the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters {
    /// Producer counter.
    pub prod: u32,
    /// Consumer counter.
    pub cons: u32,
}

impl Counters {
    /// Items produced and not yet consumed.
    pub fn used(&self) -> u32 {
        self.prod.wrapping_sub(self.cons)
    }
}

impl Ring {
    /// Describes the ring whose header is at `header`, with `num_items` (a power of two) slots
    /// of `item_size` bytes.
    pub const fn new(name: &'static str, header: GuestPtr, num_items: u32, item_size: u64) -> Self {
        Ring {
            name,
            header,
            num_items,
            item_size,
        }
    }

    /// Number of slots.
    pub fn num_items(&self) -> u32 {
        self.num_items
    }

    fn field(&self, offset: u64) -> GuestPtr {
        GuestPtr::new(self.header.bar, self.header.offset + offset)
    }

    /// Writes the power-on header: `num_items`, both counters 0, `notify_on_prod` 1,
    /// `notify_on_cons` 0.
    pub fn init(&self, bars: &GuestBars) -> Result<(), QxlGuestError> {
        bars.store_u32(self.field(RING_NUM_ITEMS), self.num_items)?;
        bars.store_u32(self.field(RING_PROD), 0)?;
        bars.store_u32(self.field(RING_NOTIFY_ON_PROD), 1)?;
        bars.store_u32(self.field(RING_CONS), 0)?;
        bars.store_u32(self.field(RING_NOTIFY_ON_CONS), 0)
    }

    /// Loads and checks the counters.
    pub fn counters(&self, bars: &GuestBars) -> Result<Counters, QxlGuestError> {
        let num_items = bars.load_u32(self.field(RING_NUM_ITEMS))?;
        let prod = bars.load_u32(self.field(RING_PROD))?;
        let cons = bars.load_u32(self.field(RING_CONS))?;
        let counters = Counters { prod, cons };

        if num_items != self.num_items || counters.used() > self.num_items {
            return Err(QxlGuestError::BadRingHeader {
                ring: self.name,
                num_items,
                prod,
                cons,
            });
        }
        Ok(counters)
    }

    /// Returns the slot that counter value `counter` names.
    pub fn item(&self, counter: u32) -> GuestPtr {
        let index = u64::from(counter & (self.num_items - 1));
        self.field(RING_ITEMS + index * self.item_size)
    }

    /// Consumer: copies the item at `cons` into `buf` and advances `cons`. Returns `None` when
    /// the ring is empty, else whether the producer asked to be notified (`cons` reached
    /// `notify_on_cons`).
    pub fn pop(&self, bars: &GuestBars, buf: &mut [u8]) -> Result<Option<bool>, QxlGuestError> {
        let counters = self.counters(bars)?;
        if counters.used() == 0 {
            return Ok(None);
        }

        bars.read(self.item(counters.cons), buf)?;
        let cons = counters.cons.wrapping_add(1);
        bars.store_u32(self.field(RING_CONS), cons)?;
        fence(Ordering::SeqCst);

        let notify_on_cons = bars.load_u32(self.field(RING_NOTIFY_ON_CONS))?;
        Ok(Some(notify_on_cons == cons))
    }

    /// Consumer about to sleep: asks for a notification on the next produced item
    /// (`notify_on_prod = prod + 1`), then checks again. Returns whether the ring is still
    /// empty; if not, the caller must keep consuming.
    pub fn arm_consumer_notify(&self, bars: &GuestBars) -> Result<bool, QxlGuestError> {
        let counters = self.counters(bars)?;
        bars.store_u32(
            self.field(RING_NOTIFY_ON_PROD),
            counters.prod.wrapping_add(1),
        )?;
        fence(Ordering::SeqCst);

        Ok(self.counters(bars)?.used() == 0)
    }

    /// Producer: advances `prod` past the item already written at the old `prod`. Returns
    /// whether the consumer asked to be notified (`prod` reached `notify_on_prod`).
    pub fn push(&self, bars: &GuestBars, counters: Counters) -> Result<bool, QxlGuestError> {
        let prod = counters.prod.wrapping_add(1);
        bars.store_u32(self.field(RING_PROD), prod)?;
        fence(Ordering::SeqCst);

        let notify_on_prod = bars.load_u32(self.field(RING_NOTIFY_ON_PROD))?;
        Ok(notify_on_prod == prod)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vm_memory::mmap::MmapRegion;

    use super::*;
    use crate::qxl::memory::Bar;

    const HDR: GuestPtr = GuestPtr::new(Bar::Ram, 64);

    fn setup() -> (GuestBars, Ring) {
        let ram = Arc::new(MmapRegion::new(4096).unwrap());
        let vram = Arc::new(MmapRegion::new(4096).unwrap());
        let bars = GuestBars::new(ram, vram);
        let ring = Ring::new("test", HDR, 4, 16);
        ring.init(&bars).unwrap();
        (bars, ring)
    }

    fn set(bars: &GuestBars, field: u64, value: u32) {
        bars.write_u32(HDR.add(field).unwrap(), value).unwrap();
    }

    fn get(bars: &GuestBars, field: u64) -> u32 {
        bars.read_u32(HDR.add(field).unwrap()).unwrap()
    }

    /// Produces one item like a guest: writes it at `prod`, then bumps `prod`.
    fn produce(bars: &GuestBars, ring: &Ring, value: u8) {
        let prod = get(bars, RING_PROD);
        bars.write(ring.item(prod), &[value; 16]).unwrap();
        set(bars, RING_PROD, prod.wrapping_add(1));
    }

    #[test]
    fn init_writes_the_power_on_header() {
        let (bars, _) = setup();
        let fields: Vec<u32> = (0..5).map(|i| get(&bars, i * 4)).collect();
        assert_eq!(fields, [4, 0, 1, 0, 0]);
    }

    #[test]
    fn items_come_back_in_order_across_the_u32_wrap() {
        let (bars, ring) = setup();
        set(&bars, RING_PROD, u32::MAX - 5);
        set(&bars, RING_CONS, u32::MAX - 5);

        let mut buf = [0u8; 16];
        for round in 0u8..4 {
            for i in 0..4 {
                produce(&bars, &ring, round * 4 + i);
            }
            for i in 0..4 {
                let notify = ring.pop(&bars, &mut buf).unwrap().unwrap();
                assert_eq!(buf, [round * 4 + i; 16]);
                // notify_on_cons is 0: the pop that wraps cons to 0 notifies.
                assert_eq!(notify, get(&bars, RING_CONS) == 0);
            }
            assert_eq!(ring.pop(&bars, &mut buf).unwrap(), None);
        }
        assert_eq!(get(&bars, RING_CONS), 10);
    }

    #[test]
    fn a_full_ring_is_not_an_error() {
        let (bars, ring) = setup();
        for i in 0..4 {
            produce(&bars, &ring, i);
        }
        assert_eq!(ring.counters(&bars).unwrap().used(), 4);
    }

    #[test]
    fn pop_reports_notify_on_cons() {
        let (bars, ring) = setup();
        produce(&bars, &ring, 1);
        produce(&bars, &ring, 2);
        set(&bars, RING_NOTIFY_ON_CONS, 2);

        let mut buf = [0u8; 16];
        assert_eq!(ring.pop(&bars, &mut buf).unwrap(), Some(false));
        assert_eq!(ring.pop(&bars, &mut buf).unwrap(), Some(true));
    }

    #[test]
    fn sleeping_consumer_arms_notify_on_prod() {
        let (bars, ring) = setup();
        set(&bars, RING_PROD, 7);
        set(&bars, RING_CONS, 7);

        assert!(ring.arm_consumer_notify(&bars).unwrap());
        assert_eq!(get(&bars, RING_NOTIFY_ON_PROD), 8);

        produce(&bars, &ring, 3);
        assert!(!ring.arm_consumer_notify(&bars).unwrap());
        assert_eq!(get(&bars, RING_NOTIFY_ON_PROD), 9);
    }

    #[test]
    fn push_reports_notify_on_prod() {
        let (bars, ring) = setup();
        let counters = ring.counters(&bars).unwrap();
        assert!(ring.push(&bars, counters).unwrap());

        let counters = ring.counters(&bars).unwrap();
        assert_eq!(counters.prod, 1);
        assert!(!ring.push(&bars, counters).unwrap());
    }

    #[test]
    fn corrupt_headers_are_refused() {
        let (bars, ring) = setup();
        let mut buf = [0u8; 16];

        set(&bars, RING_NUM_ITEMS, 8);
        assert!(matches!(
            ring.pop(&bars, &mut buf),
            Err(QxlGuestError::BadRingHeader { num_items: 8, .. })
        ));

        set(&bars, RING_NUM_ITEMS, 4);
        set(&bars, RING_PROD, 5);
        assert!(ring.pop(&bars, &mut buf).is_err());
        assert!(ring.arm_consumer_notify(&bars).is_err());

        set(&bars, RING_CONS, 6);
        assert!(ring.pop(&bars, &mut buf).is_err());
        assert_eq!(get(&bars, RING_CONS), 6);
    }
}
