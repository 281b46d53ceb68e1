// SPDX-License-Identifier: Apache-2.0
//! The bounded byte queue between a PS/2 device and the controller.

use std::collections::VecDeque;

/// Bytes a device has sent and the controller has not yet taken, at most `capacity` of them.
#[derive(Debug)]
pub struct ByteQueue {
    bytes: VecDeque<u8>,
    capacity: usize,
}

impl ByteQueue {
    /// Creates an empty queue that holds at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        ByteQueue {
            bytes: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Appends all of `bytes`, or none of them when they do not fit; returns whether they did.
    /// A key's or a packet's bytes are only useful together.
    #[must_use]
    pub fn push_all(&mut self, bytes: &[u8]) -> bool {
        if self.capacity - self.bytes.len() < bytes.len() {
            return false;
        }
        self.bytes.extend(bytes);
        true
    }

    /// Takes the oldest byte.
    pub fn pop(&mut self) -> Option<u8> {
        self.bytes.pop_front()
    }

    /// Drops every byte.
    pub fn clear(&mut self) {
        self.bytes.clear();
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_sequences_or_nothing() {
        let mut queue = ByteQueue::new(4);
        assert!(queue.push_all(&[1, 2, 3]));
        assert!(!queue.push_all(&[4, 5]));
        assert_eq!(queue.len(), 3);
        assert!(queue.push_all(&[4]));
        assert!(!queue.push_all(&[5]));
        assert_eq!(
            std::iter::from_fn(|| queue.pop()).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
    }
}
