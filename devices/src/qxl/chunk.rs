// SPDX-License-Identifier: Apache-2.0
//! QXLDataChunk chains: data spread over linked chunks, flattened into a list of checked
//! pieces of BAR memory.
//!
//! A chunk is a 20-byte header (u32 `data_size`, u64 `prev_chunk`, u64 `next_chunk`) followed
//! by its data. The walk is bounded: at most [`MAX_CHUNKS`] chunks and never more bytes than
//! the object needs, so a looping or oversized chain costs a few thousand small reads at most.

use super::error::QxlGuestError;
use super::memory::{le_u32, le_u64, GuestBars, GuestPtr};
use super::memslot::MemSlots;

/// Most chunks a chain may have.
pub const MAX_CHUNKS: usize = 4096;
/// Bytes of a QXLDataChunk header.
pub const CHUNK_HEADER_SIZE: u64 = CHUNK_HEADER_LEN as u64;
const CHUNK_HEADER_LEN: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    ptr: GuestPtr,
    len: u64,
}

/// Bytes of guest memory read as one stream: a single range or the data of a chunk chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataStream {
    pieces: Vec<Piece>,
    /// Stream offset at which each piece starts.
    starts: Vec<u64>,
    len: u64,
}

impl DataStream {
    /// A stream of `len` contiguous bytes at `ptr`.
    pub fn contiguous(ptr: GuestPtr, len: u64) -> Self {
        let mut stream = DataStream::default();
        stream.push(ptr, len);
        stream
    }

    fn push(&mut self, ptr: GuestPtr, len: u64) {
        if len == 0 {
            return;
        }
        self.pieces.push(Piece { ptr, len });
        self.starts.push(self.len);
        self.len += len;
    }

    /// Total bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Number of contiguous pieces.
    #[cfg(test)]
    pub fn pieces(&self) -> usize {
        self.pieces.len()
    }

    /// Calls `f(ptr, len, pos)` for each contiguous piece of `[offset, offset + len)`, where
    /// `pos` is the piece's position inside the requested range.
    pub fn for_each_piece(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(GuestPtr, u64, u64) -> Result<(), QxlGuestError>,
    ) -> Result<(), QxlGuestError> {
        let end = offset.checked_add(len).filter(|&e| e <= self.len);
        let end = end.ok_or(QxlGuestError::ChunkBytes {
            got: self.len,
            expected: offset.saturating_add(len),
        })?;

        let mut index = self
            .starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        let mut at = offset;
        while at < end {
            let piece = self.pieces[index];
            let skip = at - self.starts[index];
            let n = (piece.len - skip).min(end - at);
            let ptr = GuestPtr::new(piece.ptr.bar, piece.ptr.offset + skip);
            f(ptr, n, at - offset)?;
            at += n;
            index += 1;
        }
        Ok(())
    }

    /// Copies `buf.len()` bytes from stream offset `offset`.
    pub fn read(&self, bars: &GuestBars, offset: u64, buf: &mut [u8]) -> Result<(), QxlGuestError> {
        self.for_each_piece(offset, buf.len() as u64, |ptr, n, pos| {
            // Both are below buf.len(), so they fit in usize.
            let start = usize::try_from(pos).unwrap_or(usize::MAX);
            let end = usize::try_from(pos + n).unwrap_or(usize::MAX);
            let part = buf.get_mut(start..end).ok_or(QxlGuestError::OutsideBar {
                offset: pos,
                len: n,
            })?;
            bars.read(ptr, part)
        })
    }
}

/// Walks the chain starting at the QXLPHYSICAL `addr` and returns its data, which must total
/// exactly `expected` bytes. Every chunk (header and data) must lie inside a memory slot.
pub fn walk_chunks(
    bars: &GuestBars,
    slots: &MemSlots,
    addr: u64,
    expected: u64,
) -> Result<DataStream, QxlGuestError> {
    if addr == 0 {
        return Err(QxlGuestError::NullAddress("data chunk"));
    }

    let mut stream = DataStream::default();
    let mut addr = addr;
    let mut chunks = 0;
    while addr != 0 {
        chunks += 1;
        if chunks > MAX_CHUNKS {
            return Err(QxlGuestError::TooManyChunks(MAX_CHUNKS));
        }

        let mut header = [0u8; CHUNK_HEADER_LEN];
        bars.read(slots.translate(addr, CHUNK_HEADER_SIZE)?, &mut header)?;
        let data_size = u64::from(le_u32(&header, 0));
        let next = le_u64(&header, 12);

        let got = stream.len() + data_size;
        if got > expected {
            return Err(QxlGuestError::ChunkBytes { got, expected });
        }
        let chunk = slots.translate(addr, CHUNK_HEADER_SIZE + data_size)?;
        stream.push(
            GuestPtr::new(chunk.bar, chunk.offset + CHUNK_HEADER_SIZE),
            data_size,
        );

        if next == addr {
            return Err(QxlGuestError::ChunkLoop(addr));
        }
        addr = next;
    }

    if stream.len() != expected {
        return Err(QxlGuestError::ChunkBytes {
            got: stream.len(),
            expected,
        });
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::qxl::memory::Bar;

    const BASE: u64 = 0x8000_0000;
    const SIZE: u64 = 4 << 20;

    fn setup() -> (GuestBars, MemSlots) {
        crate::qxl::testutil::ram_slot(BASE, SIZE, SIZE - 4096)
    }

    /// Writes a chunk at BAR offset `off` and returns its QXLPHYSICAL.
    fn chunk(bars: &GuestBars, slots: &MemSlots, off: u64, data: &[u8], next: u64) -> u64 {
        let mut b = Vec::new();
        b.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&next.to_le_bytes());
        b.extend_from_slice(data);
        bars.write(GuestPtr::new(Bar::Ram, off), &b).unwrap();
        slots.address(1, off)
    }

    #[test]
    fn chain_is_read_as_one_stream() {
        let (bars, slots) = setup();
        let second = chunk(&bars, &slots, 0x2000, b"world", 0);
        let empty = chunk(&bars, &slots, 0x3000, b"", second);
        let first = chunk(&bars, &slots, 0x1000, b"hello ", empty);

        let stream = walk_chunks(&bars, &slots, first, 11).unwrap();
        assert_eq!(stream.pieces(), 2);
        let mut buf = [0u8; 11];
        stream.read(&bars, 0, &mut buf).unwrap();
        assert_eq!(&buf, b"hello world");
        let mut buf = [0u8; 4];
        stream.read(&bars, 4, &mut buf).unwrap();
        assert_eq!(&buf, b"o wo");
        assert!(stream.read(&bars, 8, &mut buf).is_err());
    }

    #[test]
    fn byte_count_must_match() {
        let (bars, slots) = setup();
        let first = chunk(&bars, &slots, 0x1000, b"hello", 0);

        assert_eq!(
            walk_chunks(&bars, &slots, first, 6),
            Err(QxlGuestError::ChunkBytes {
                got: 5,
                expected: 6
            })
        );
        assert_eq!(
            walk_chunks(&bars, &slots, first, 4),
            Err(QxlGuestError::ChunkBytes {
                got: 5,
                expected: 4
            })
        );
    }

    #[test]
    fn next_outside_every_slot_is_refused() {
        let (bars, slots) = setup();
        let outside = slots.address(1, SIZE - 4096);
        let first = chunk(&bars, &slots, 0x1000, b"ab", outside);
        assert!(matches!(
            walk_chunks(&bars, &slots, first, 4),
            Err(QxlGuestError::OutsideSlot { .. })
        ));

        let first = chunk(&bars, &slots, 0x1000, b"ab", 0x0500_0000_0000_0000);
        assert_eq!(
            walk_chunks(&bars, &slots, first, 4),
            Err(QxlGuestError::SlotInactive(5))
        );
        assert!(walk_chunks(&bars, &slots, 0, 4).is_err());
    }

    #[test]
    fn self_loop_and_huge_sizes_are_refused() {
        let (bars, slots) = setup();
        let me = slots.address(1, 0x1000);
        chunk(&bars, &slots, 0x1000, b"", me);
        assert_eq!(
            walk_chunks(&bars, &slots, me, 4),
            Err(QxlGuestError::ChunkLoop(me))
        );

        let first = chunk(&bars, &slots, 0x1000, b"", 0);
        bars.write_u32(GuestPtr::new(Bar::Ram, 0x1000), u32::MAX)
            .unwrap();
        assert!(matches!(
            walk_chunks(&bars, &slots, first, 4096),
            Err(QxlGuestError::ChunkBytes { .. })
        ));
        assert!(matches!(
            walk_chunks(&bars, &slots, first, u64::MAX),
            Err(QxlGuestError::OutsideSlot { .. })
        ));
    }

    #[test]
    fn long_chains_stop_at_the_cap_quickly() {
        let (bars, slots) = setup();
        let mut next = 0;
        for i in (0..100_000u64).rev() {
            next = chunk(&bars, &slots, 0x1000 + i * 24, &[1], next);
        }

        let start = Instant::now();
        let result = walk_chunks(&bars, &slots, next, 100_000);
        assert_eq!(result, Err(QxlGuestError::TooManyChunks(MAX_CHUNKS)));
        assert!(start.elapsed() < Duration::from_millis(100));
    }
}
