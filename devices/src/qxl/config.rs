// SPDX-License-Identifier: Apache-2.0
//! The layout the engine and the ROM share: surface count, surface0 area, memory slot bits.

use thiserror::Error;

use super::monitors::MAX_MONITORS;
use super::regs::*;

/// The device layout the engine works with; the ROM must report the same values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QxlConfig {
    /// Surface ids, ROM `n_surfaces`.
    pub n_surfaces: u32,
    /// Bytes at BAR0 offset 0 reserved for the primary surface in legacy modes (ROM
    /// `surface0_area_size`); also the largest primary surface accepted, as in QEMU.
    pub surface0_area_size: u32,
    /// Memory slots, including the reserved ones below `slots_start`.
    pub num_memslots: u8,
    /// First slot the guest may use (ROM `slots_start`).
    pub slots_start: u8,
    /// ROM `slot_gen_bits`.
    pub slot_gen_bits: u8,
    /// ROM `slot_id_bits`.
    pub slot_id_bits: u8,
    /// Most heads accepted from the guest's monitors config (at most 64).
    pub max_monitors: u16,
}

impl Default for QxlConfig {
    fn default() -> Self {
        QxlConfig {
            n_surfaces: QXL_NUM_SURFACES,
            surface0_area_size: QXL_DEFAULT_SURFACE0_AREA_SIZE,
            num_memslots: QXL_NUM_MEMSLOTS,
            slots_start: QXL_SLOTS_START,
            slot_gen_bits: QXL_SLOT_GEN_BITS,
            slot_id_bits: QXL_SLOT_ID_BITS,
            max_monitors: MAX_MONITORS,
        }
    }
}

/// A layout that cannot work with the BARs it was given.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum QxlConfigError {
    /// BAR0 cannot hold the surface0 area and the RAM header.
    #[error(
        "RAM BAR of {ram_size} bytes cannot hold a {surface0} byte surface0 area and the header"
    )]
    RamTooSmall {
        /// BAR0 size.
        ram_size: u64,
        /// Configured surface0 area.
        surface0: u32,
    },
    /// Slot bits that do not fit a 64-bit address or the slot count.
    #[error(
        "memory slot layout ({num_memslots} slots, {id_bits} id bits, {gen_bits} generation \
         bits) is invalid"
    )]
    BadSlotLayout {
        /// Slots.
        num_memslots: u8,
        /// Id bits.
        id_bits: u8,
        /// Generation bits.
        gen_bits: u8,
    },
    /// Zero surfaces, or more than the engine is willing to track.
    #[error("{0} surfaces is not a usable surface count")]
    BadSurfaceCount(u32),
}

impl QxlConfig {
    /// Checks the layout against a BAR0 of `ram_size` bytes.
    pub fn validate(&self, ram_size: u64) -> Result<(), QxlConfigError> {
        let header = ram_header_offset(ram_size);
        if header.is_none_or(|h| h < u64::from(self.surface0_area_size)) {
            return Err(QxlConfigError::RamTooSmall {
                ram_size,
                surface0: self.surface0_area_size,
            });
        }

        let bits = u32::from(self.slot_id_bits) + u32::from(self.slot_gen_bits);
        let slots_fit = self.slot_id_bits < 8 || u32::from(self.num_memslots) <= 256;
        let slot_ids_fit =
            self.slot_id_bits >= 8 || u32::from(self.num_memslots) <= 1u32 << self.slot_id_bits;
        if self.slot_id_bits == 0
            || bits >= 64
            || !slots_fit
            || !slot_ids_fit
            || self.slots_start >= self.num_memslots
        {
            return Err(QxlConfigError::BadSlotLayout {
                num_memslots: self.num_memslots,
                id_bits: self.slot_id_bits,
                gen_bits: self.slot_gen_bits,
            });
        }

        if !(1..=65536).contains(&self.n_surfaces) {
            return Err(QxlConfigError::BadSurfaceCount(self.n_surfaces));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_checks() {
        let config = QxlConfig::default();
        assert!(config.validate(QXL_DEFAULT_RAM_SIZE).is_ok());
        assert!(matches!(
            config.validate(16 << 20),
            Err(QxlConfigError::RamTooSmall { .. })
        ));
        assert!(config.validate(100).is_err());

        let bad = QxlConfig {
            slot_id_bits: 40,
            slot_gen_bits: 24,
            ..config
        };
        assert!(matches!(
            bad.validate(QXL_DEFAULT_RAM_SIZE),
            Err(QxlConfigError::BadSlotLayout { .. })
        ));
        let bad = QxlConfig {
            slot_id_bits: 2,
            ..config
        };
        assert!(bad.validate(QXL_DEFAULT_RAM_SIZE).is_err());
        let bad = QxlConfig {
            n_surfaces: 0,
            ..config
        };
        assert!(bad.validate(QXL_DEFAULT_RAM_SIZE).is_err());
    }
}
