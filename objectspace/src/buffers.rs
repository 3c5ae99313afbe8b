//! Buffers that received frames are read into, kept for reuse.
//!
//! A frame is read with `read_exact`, which takes initialised bytes, so a
//! fresh 1 MiB buffer is zeroed before the stream writes over it: 19 % of a
//! process's CPU while it receives a large value (a `get`, the mount's reads,
//! an owner fetching a put's chunks). A buffer given back after use was
//! initialised by its last frame, so only what a longer frame adds to it is
//! zeroed again.
//!
//! Giving a buffer back is optional: one that is dropped instead is freed as
//! any `Vec` is. What is kept is bounded (`KEPT` buffers of at most
//! `LARGEST` bytes), so the pool never holds more than a few frames' worth.

use std::sync::Mutex;

/// Buffers kept at most: as many as a busy process has frames in flight.
const KEPT: usize = 16;
/// Smaller buffers are not worth keeping: the allocator serves them from
/// memory it already holds, and zeroing them costs little.
const SMALLEST: usize = 64 << 10;
/// Larger buffers are not kept, so the pool stays a few MiB (the largest
/// frame, a data frame or a blob chunk, is 1 MiB and a little).
const LARGEST: usize = (1 << 20) + 64;

static POOL: Pool = Pool::new();

/// A buffer of `len` bytes to read a frame into. Its contents are whatever
/// was in it before (zeroes where it is new), which a reader overwrites.
pub fn filled(len: usize) -> Vec<u8> {
    POOL.filled(len)
}

/// Gives back a buffer (from [`filled`] or anywhere else) once its bytes
/// are no longer needed; kept if it is worth reusing and the pool has room.
pub fn give_back(buffer: Vec<u8>) {
    POOL.give_back(buffer)
}

/// The buffers kept, in no order: [`Pool::filled`] looks for the one with
/// the most initialised bytes.
struct Pool(Mutex<Vec<Vec<u8>>>);

impl Pool {
    const fn new() -> Self {
        Self(Mutex::new(Vec::new()))
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // A poisoned lock only means a thread panicked while pushing or
        // popping a `Vec`; the list itself is intact.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn filled(&self, len: usize) -> Vec<u8> {
        let mut buffer = if len < SMALLEST {
            Vec::new()
        } else {
            let mut kept = self.kept();
            // The one with the most initialised bytes of those asked for: a
            // 1 MiB frame after a value's short last frame should not pay for
            // the difference.
            let best = (0..kept.len()).max_by_key(|&i| kept[i].len().min(len));
            best.map(|i| kept.swap_remove(i)).unwrap_or_default()
        };
        // Shortening keeps the bytes; lengthening zeroes only the new part.
        buffer.resize(len, 0);
        buffer
    }

    fn give_back(&self, buffer: Vec<u8>) {
        if buffer.len() < SMALLEST || buffer.capacity() > LARGEST {
            return;
        }
        let mut kept = self.kept();
        if kept.len() < KEPT {
            kept.push(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_handed_out_again_with_its_bytes() {
        let pool = Pool::new();
        let mut first = pool.filled(1 << 20);
        assert_eq!(first.len(), 1 << 20);
        assert!(first.iter().all(|&b| b == 0), "a new buffer is zeroed");
        first[5] = 7;
        let address = first.as_ptr();
        pool.give_back(first);
        let again = pool.filled(100_000);
        assert_eq!(again.len(), 100_000);
        assert_eq!(again.as_ptr(), address);
        assert_eq!(again[5], 7, "reused without being zeroed");
        // Shortened, it grows back with zeroes past what it kept.
        pool.give_back(again);
        let grown = pool.filled(200_000);
        assert_eq!(grown.as_ptr(), address);
        assert!(grown[100_000..].iter().all(|&b| b == 0));
    }

    #[test]
    fn the_longest_buffer_is_handed_out_first() {
        let pool = Pool::new();
        pool.give_back(vec![1u8; SMALLEST]);
        pool.give_back(vec![2u8; 1 << 20]);
        pool.give_back(vec![3u8; SMALLEST * 2]);
        assert_eq!(pool.filled(1 << 20)[0], 2);
        assert_eq!(pool.filled(1 << 20)[0], 3);
    }

    #[test]
    fn small_oversized_and_surplus_buffers_are_not_kept() {
        let pool = Pool::new();
        pool.give_back(vec![1u8; SMALLEST - 1]);
        pool.give_back(vec![1u8; LARGEST + 1]);
        assert!(pool.kept().is_empty());
        for _ in 0..KEPT + 3 {
            pool.give_back(vec![1u8; SMALLEST]);
        }
        assert_eq!(pool.kept().len(), KEPT);
        // A small buffer is never taken from the pool.
        assert!(pool.filled(100).iter().all(|&b| b == 0));
        assert_eq!(pool.kept().len(), KEPT);
    }
}
