//! Helpers for tests that boot guests.
