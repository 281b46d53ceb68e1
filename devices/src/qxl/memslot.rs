// SPDX-License-Identifier: Apache-2.0
//! Memory slots: how a QXLPHYSICAL address (slot id, generation, offset) becomes a checked
//! offset inside BAR0 or BAR1.
//!
//! The guest registers a slot as a guest-physical range `[mem_start, mem_end)`. The range must
//! lie inside one BAR at its current address; it is translated to (BAR, offset) once, when it
//! is added. Every later access names `[offset, offset + size)` and must fit inside the slot.

use super::error::QxlGuestError;
use super::memory::{Bar, GuestPtr};

/// Where a BAR currently sits in guest-physical space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarWindow {
    /// The BAR.
    pub bar: Bar,
    /// Guest-physical base address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

impl BarWindow {
    /// Returns the BAR offset of `[start, end)` if the range lies inside this window.
    fn offset_of(&self, start: u64, end: u64) -> Option<u64> {
        let limit = self.base.checked_add(self.size)?;
        (start >= self.base && end <= limit).then(|| start - self.base)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MemSlot {
    base: GuestPtr,
    size: u64,
    generation: u8,
}

/// The slot table and the QXLPHYSICAL bit layout.
#[derive(Debug)]
pub struct MemSlots {
    slots: Vec<Option<MemSlot>>,
    slots_start: u8,
    generation: u8,
    id_shift: u32,
    gen_shift: u32,
    gen_mask: u64,
    offset_mask: u64,
}

impl MemSlots {
    /// Creates an empty table of `num_slots` slots of which the guest may use
    /// `slots_start..num_slots`; addresses hold the slot id in their top `id_bits` bits and the
    /// generation in the `gen_bits` below. `id_bits + gen_bits` must be below 64 (checked by
    /// [`super::QxlConfig::validate`]).
    pub fn new(num_slots: u8, slots_start: u8, id_bits: u8, gen_bits: u8, generation: u8) -> Self {
        let id_shift = 64 - u32::from(id_bits);
        let gen_shift = id_shift - u32::from(gen_bits);
        MemSlots {
            slots: vec![None; usize::from(num_slots)],
            slots_start,
            generation,
            id_shift,
            gen_shift,
            gen_mask: (1u64 << gen_bits) - 1,
            offset_mask: (1u64 << gen_shift) - 1,
        }
    }

    /// Adds slot `id` over the guest-physical range `[start, end)`, which must lie inside one
    /// of `windows`.
    pub fn add(
        &mut self,
        id: u8,
        start: u64,
        end: u64,
        windows: &[BarWindow],
    ) -> Result<(), QxlGuestError> {
        let index = self.guest_index(u64::from(id))?;
        if self.slots[index].is_some() {
            return Err(QxlGuestError::SlotInUse(id));
        }
        if start > end {
            return Err(QxlGuestError::SlotStartAfterEnd { start, end });
        }

        let (bar, offset) = windows
            .iter()
            .find_map(|w| Some((w.bar, w.offset_of(start, end)?)))
            .ok_or(QxlGuestError::SlotOutsideBars { start, end })?;
        self.slots[index] = Some(MemSlot {
            base: GuestPtr::new(bar, offset),
            size: end - start,
            generation: self.generation,
        });
        log::debug!("qxl: memslot {id}: {start:#x}..{end:#x} -> {bar:?} + {offset:#x}");

        Ok(())
    }

    /// Deletes slot `id`; deleting an inactive slot is allowed, as in QEMU.
    pub fn del(&mut self, id: u8) -> Result<(), QxlGuestError> {
        let index = self.guest_index(u64::from(id))?;
        self.slots[index] = None;
        Ok(())
    }

    /// Deletes every slot.
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
    }

    /// Returns whether slot `id` is active.
    pub fn is_active(&self, id: u8) -> bool {
        self.slots.get(usize::from(id)).is_some_and(Option::is_some)
    }

    /// Translates the object `[addr, addr + size)` to a BAR offset, checking slot id,
    /// generation and that the whole object lies inside the slot.
    pub fn translate(&self, addr: u64, size: u64) -> Result<GuestPtr, QxlGuestError> {
        let id = addr >> self.id_shift;
        let slot = usize::try_from(id)
            .ok()
            .and_then(|i| self.slots.get(i).copied().flatten())
            .ok_or(QxlGuestError::SlotInactive(id))?;

        let generation = (addr >> self.gen_shift) & self.gen_mask;
        if generation != u64::from(slot.generation) {
            return Err(QxlGuestError::SlotGeneration {
                addr,
                got: generation,
                expected: slot.generation,
            });
        }

        let offset = addr & self.offset_mask;
        let fits = offset.checked_add(size).is_some_and(|end| end <= slot.size);
        if !fits {
            return Err(QxlGuestError::OutsideSlot { addr, size });
        }
        slot.base
            .add(offset)
            .ok_or(QxlGuestError::OutsideSlot { addr, size })
    }

    /// Builds the QXLPHYSICAL address of `offset` in slot `id` (for tests and tools).
    pub fn address(&self, id: u8, offset: u64) -> u64 {
        (u64::from(id) << self.id_shift)
            | (u64::from(self.generation) << self.gen_shift)
            | (offset & self.offset_mask)
    }

    fn guest_index(&self, id: u64) -> Result<usize, QxlGuestError> {
        usize::try_from(id)
            .ok()
            .filter(|&i| i >= usize::from(self.slots_start) && i < self.slots.len())
            .ok_or(QxlGuestError::BadSlotId(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAR0: u64 = 0xc000_0000;
    const BAR1: u64 = 0xd000_0000;
    const SIZE: u64 = 0x400_0000;

    fn windows() -> [BarWindow; 2] {
        [
            BarWindow {
                bar: Bar::Ram,
                base: BAR0,
                size: SIZE,
            },
            BarWindow {
                bar: Bar::Vram,
                base: BAR1,
                size: SIZE,
            },
        ]
    }

    fn linux_slots() -> MemSlots {
        let mut slots = MemSlots::new(8, 1, 8, 8, 0);
        slots.add(1, BAR0, BAR0 + SIZE - 8192, &windows()).unwrap();
        slots.add(2, BAR1, BAR1 + SIZE, &windows()).unwrap();
        slots
    }

    #[test]
    fn linux_slots_translate_to_bar_offsets() {
        let slots = linux_slots();

        assert_eq!(slots.address(1, 0x12_3000), 0x0100_0000_0012_3000);
        let p = slots.translate(0x0100_0000_0012_3000, 16).unwrap();
        assert_eq!(p, GuestPtr::new(Bar::Ram, 0x12_3000));
        let p = slots.translate(0x0200_0000_0000_5000, 4096).unwrap();
        assert_eq!(p, GuestPtr::new(Bar::Vram, 0x5000));
    }

    #[test]
    fn slot_inside_a_bar_gets_its_offset() {
        let mut slots = MemSlots::new(8, 1, 8, 8, 0);
        slots
            .add(3, BAR1 + 0x1000, BAR1 + 0x3000, &windows())
            .unwrap();

        let p = slots.translate(slots.address(3, 0x10), 4).unwrap();
        assert_eq!(p, GuestPtr::new(Bar::Vram, 0x1010));
    }

    #[test]
    fn objects_must_end_inside_the_slot() {
        let slots = linux_slots();
        let slot_size = SIZE - 8192;

        assert!(slots.translate(slots.address(1, slot_size - 8), 8).is_ok());
        assert!(slots.translate(slots.address(1, slot_size), 0).is_ok());
        assert_eq!(
            slots.translate(slots.address(1, slot_size - 8), 9),
            Err(QxlGuestError::OutsideSlot {
                addr: slots.address(1, slot_size - 8),
                size: 9
            })
        );
        assert!(slots.translate(slots.address(1, 0), u64::MAX).is_err());
        assert!(slots
            .translate(slots.address(1, 0xffff_ffff_ffff), 2)
            .is_err());
    }

    #[test]
    fn bad_ids_and_generations_are_refused() {
        let slots = linux_slots();

        assert_eq!(slots.translate(0, 1), Err(QxlGuestError::SlotInactive(0)));
        assert_eq!(
            slots.translate(0x0300_0000_0000_0000, 1),
            Err(QxlGuestError::SlotInactive(3))
        );
        assert_eq!(
            slots.translate(0xc800_0000_0000_0000, 1),
            Err(QxlGuestError::SlotInactive(200))
        );
        assert!(matches!(
            slots.translate(0x0101_0000_0000_0000, 1),
            Err(QxlGuestError::SlotGeneration { got: 1, .. })
        ));
    }

    #[test]
    fn bad_slot_requests_are_refused() {
        let mut slots = linux_slots();
        let w = windows();

        for id in [0, 8, 200] {
            assert_eq!(
                slots.add(id, BAR0, BAR0 + 4096, &w),
                Err(QxlGuestError::BadSlotId(u64::from(id)))
            );
        }
        assert_eq!(
            slots.add(1, BAR0, BAR0 + 4096, &w),
            Err(QxlGuestError::SlotInUse(1))
        );
        assert!(matches!(
            slots.add(3, BAR0 + 2, BAR0 + 1, &w),
            Err(QxlGuestError::SlotStartAfterEnd { .. })
        ));
        assert!(matches!(
            slots.add(3, BAR0, BAR0 + SIZE + 1, &w),
            Err(QxlGuestError::SlotOutsideBars { .. })
        ));
        assert!(matches!(
            slots.add(3, BAR0 - 1, BAR0 + 1, &w),
            Err(QxlGuestError::SlotOutsideBars { .. })
        ));
        assert!(matches!(
            slots.add(3, u64::MAX - 1, u64::MAX, &w),
            Err(QxlGuestError::SlotOutsideBars { .. })
        ));
        assert!(slots.add(3, BAR0 + SIZE, BAR0 + SIZE, &w).is_ok());
    }

    #[test]
    fn delete_and_clear() {
        let mut slots = linux_slots();

        slots.del(1).unwrap();
        assert!(!slots.is_active(1));
        assert!(slots.translate(slots.address(1, 0), 1).is_err());
        assert_eq!(slots.del(9), Err(QxlGuestError::BadSlotId(9)));

        slots.clear();
        assert!(!slots.is_active(2));
        slots.add(2, BAR1, BAR1 + 1, &windows()).unwrap();
    }
}
