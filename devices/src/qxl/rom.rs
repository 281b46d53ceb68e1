// SPDX-License-Identifier: Apache-2.0
//! The contents of the QXL ROM BAR: `QXLRom` followed by the mode list
//! (spice-protocol `qxl_dev.h`).

use super::regs::*;

/// Resolutions offered in the legacy mode list, as QEMU offers them; only those whose
/// 32-bit frame fits the primary surface area are listed.
const RESOLUTIONS: [(u32, u32); 16] = [
    (640, 480),
    (800, 480),
    (800, 600),
    (832, 624),
    (960, 640),
    (1024, 600),
    (1024, 768),
    (1152, 864),
    (1152, 870),
    (1280, 720),
    (1280, 768),
    (1280, 800),
    (1280, 960),
    (1280, 1024),
    (1600, 900),
    (1920, 1080),
];
/// Bytes of one QXLMode: eight u32 fields.
const MODE_SIZE: usize = 32;
/// Pixels per millimetre used for the modes' physical size, as QEMU's 0.2936875 mm/pixel.
const MILLI_PER_PIXEL_NUM: u64 = 2_936_875;
const MILLI_PER_PIXEL_DEN: u64 = 10_000_000;

fn put_u32(rom: &mut [u8], offset: usize, value: u32) {
    rom[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

/// The modes that fit a primary surface area of `surface0_area_size` bytes at 32 bpp.
pub fn modes(surface0_area_size: u32) -> Vec<(u32, u32)> {
    RESOLUTIONS
        .iter()
        .copied()
        .filter(|(x, y)| x * 4 * y <= surface0_area_size)
        .collect()
}

/// Builds the ROM for a RAM BAR of `ram_size` bytes.
pub fn build_rom(ram_size: u64) -> Vec<u8> {
    let mut rom = vec![0u8; usize::try_from(QXL_ROM_SIZE).expect("8 KiB")];
    let surface0 = QXL_DEFAULT_SURFACE0_AREA_SIZE;
    let header = ram_header_offset(ram_size).expect("RAM BAR larger than its header");
    let pages = num_pages(ram_size, surface0).expect("RAM BAR larger than the surface area");

    put_u32(&mut rom, ROM_MAGIC, QXL_ROM_MAGIC);
    put_u32(&mut rom, ROM_MODES_OFFSET, ROM_STRUCT_SIZE);
    put_u32(
        &mut rom,
        ROM_NUM_PAGES,
        u32::try_from(pages).expect("pages fit 32 bits"),
    );
    put_u32(&mut rom, ROM_PAGES_OFFSET, surface0);
    put_u32(&mut rom, ROM_DRAW_AREA_OFFSET, 0);
    put_u32(&mut rom, ROM_SURFACE0_AREA_SIZE, surface0);
    put_u32(
        &mut rom,
        ROM_RAM_HEADER_OFFSET,
        u32::try_from(header).expect("header below 4 GiB"),
    );
    put_u32(&mut rom, ROM_N_SURFACES, QXL_NUM_SURFACES);
    rom[ROM_SLOTS_START] = QXL_SLOTS_START;
    rom[ROM_SLOTS_END] = QXL_SLOTS_END;
    rom[ROM_SLOT_GEN_BITS] = QXL_SLOT_GEN_BITS;
    rom[ROM_SLOT_ID_BITS] = QXL_SLOT_ID_BITS;
    rom[ROM_SLOT_GENERATION] = QXL_SLOT_GENERATION;

    let list = ROM_STRUCT_SIZE as usize;
    let modes = modes(surface0);
    put_u32(
        &mut rom,
        list,
        u32::try_from(modes.len()).expect("16 modes"),
    );
    for (id, (x, y)) in modes.iter().enumerate() {
        let at = list + 4 + id * MODE_SIZE;
        let millimetres = |pixels: u32| {
            let mm = u64::from(pixels) * MILLI_PER_PIXEL_NUM / MILLI_PER_PIXEL_DEN;
            u32::try_from(mm).expect("a few thousand millimetres")
        };
        let id = u32::try_from(id).expect("16 modes");
        let fields = [id, *x, *y, 32, x * 4, millimetres(*x), millimetres(*y), 0];
        for (i, value) in fields.iter().enumerate() {
            put_u32(&mut rom, at + i * 4, *value);
        }
    }
    rom
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(rom: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(rom[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn rom_fields_match_the_linux_driver_expectations() {
        let rom = build_rom(64 << 20);
        assert_eq!(rom.len(), 8192);
        assert_eq!(&rom[..4], b"QXRO");
        assert_eq!(u32_at(&rom, ROM_RAM_HEADER_OFFSET), (64 << 20) - 8192);
        assert_eq!(u32_at(&rom, ROM_SURFACE0_AREA_SIZE), 16 << 20);
        assert_eq!(
            u32_at(&rom, ROM_NUM_PAGES),
            ((64 << 20) - 8192 - (16 << 20)) / 4096
        );
        assert_eq!(u32_at(&rom, ROM_N_SURFACES), 1024);
        assert_eq!(
            &rom[ROM_SLOTS_START..=ROM_SLOT_GENERATION],
            &[1, 7, 8, 8, 0]
        );
        assert_eq!(u32_at(&rom, ROM_MODES_OFFSET), 1160);
    }

    #[test]
    fn every_listed_mode_fits_the_primary_surface_area() {
        let rom = build_rom(64 << 20);
        let count = u32_at(&rom, 1160) as usize;
        assert_eq!(count, 16);
        for i in 0..count {
            let at = 1164 + i * 32;
            let (y, stride) = (u32_at(&rom, at + 8), u32_at(&rom, at + 16));
            assert!(y * stride <= 16 << 20, "mode {i}");
            assert_eq!(u32_at(&rom, at + 12), 32);
        }
        assert!(modes(4 << 20).iter().all(|(x, y)| x * y * 4 <= 4 << 20));
        assert!(!modes(4 << 20).contains(&(1920, 1080)));
    }
}
