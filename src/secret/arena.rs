//! Locked, non-dumpable, zeroize-on-drop memory for secrets.
//!
//! A [`LockedBuf`] is an anonymous private mapping that is excluded from core dumps
//! (`MADV_DONTDUMP`), wiped in any child after `fork` (`MADV_WIPEONFORK`, best effort) and
//! locked in RAM (`mlock`, so it is never swapped). Every failure is reported, never ignored:
//! the caller fails closed. Its bytes are overwritten with zeroes before it is unmapped.
//!
//! [`SecretArena`] packs many secrets into one `LockedBuf` so a large pool stays far below the
//! default 8 MiB `RLIMIT_MEMLOCK`; each secret is addressed by a [`SecretRange`].
//!
//! This module and `hardening.rs` are the only places where `unsafe` is allowed.
#![allow(unsafe_code)]

use std::ptr::NonNull;

/// Why locked memory could not be set up. Always fatal (exit code 5).
#[derive(Debug, thiserror::Error)]
pub enum ArenaError {
    /// `mmap` failed: usually the address-space limit.
    #[error("cannot map secret memory: {0}")]
    Map(std::io::Error),
    /// `madvise(MADV_DONTDUMP)` failed: the kernel does not support it.
    #[error("cannot exclude secret memory from core dumps: {0}")]
    DontDump(std::io::Error),
    /// `mlock` failed: usually `RLIMIT_MEMLOCK` is too small for the requested size.
    #[error("cannot lock secret memory ({bytes} bytes; check RLIMIT_MEMLOCK): {source}")]
    Lock {
        bytes: usize,
        source: std::io::Error,
    },
}

/// A fixed-capacity byte buffer in locked, non-dumpable memory, zeroed on drop.
///
/// No `Debug`, `Display` or `Clone`: the contents are secret.
pub struct LockedBuf {
    ptr: NonNull<u8>,
    /// Mapped size, a whole number of pages.
    capacity: usize,
    /// Bytes in use, from the start.
    len: usize,
}

// SAFETY: `LockedBuf` owns its mapping exclusively (like `Vec<u8>`); shared access only reads.
unsafe impl Send for LockedBuf {}
// SAFETY: `&LockedBuf` only allows reads of initialised bytes.
unsafe impl Sync for LockedBuf {}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size <= 0 {
        4096
    } else {
        size as usize
    }
}

impl LockedBuf {
    /// Maps, excludes from dumps and locks at least `min_capacity` bytes (rounded up to pages).
    pub fn new(min_capacity: usize) -> Result<Self, ArenaError> {
        let page = page_size();
        let capacity = min_capacity.max(1).div_ceil(page) * page;
        // SAFETY: an anonymous private mapping with no address hint has no preconditions; the
        // result is checked against MAP_FAILED before use.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                capacity,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(ArenaError::Map(std::io::Error::last_os_error()));
        }
        let Some(ptr) = NonNull::new(raw.cast::<u8>()) else {
            return Err(ArenaError::Map(std::io::Error::other("mmap returned null")));
        };
        // From here on `buf` owns the mapping, so every early return unmaps it.
        let buf = LockedBuf {
            ptr,
            capacity,
            len: 0,
        };
        // SAFETY: the range is exactly the page-aligned mapping created above.
        if unsafe { libc::madvise(raw, capacity, libc::MADV_DONTDUMP) } != 0 {
            return Err(ArenaError::DontDump(std::io::Error::last_os_error()));
        }
        // Best effort: kernels before 4.14 lack it, and the process never forks anyway.
        // SAFETY: as above.
        let _ = unsafe { libc::madvise(raw, capacity, libc::MADV_WIPEONFORK) };
        // SAFETY: as above; mlock only pins the pages.
        if unsafe { libc::mlock(raw, capacity) } != 0 {
            return Err(ArenaError::Lock {
                bytes: capacity,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(buf)
    }

    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no byte is in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Total bytes that fit.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `capacity` bytes long, zero-initialised by the kernel and
        // `len <= capacity`; the returned borrow ties it to `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The unused tail, to be filled and then committed with [`LockedBuf::commit`].
    pub fn spare_mut(&mut self) -> &mut [u8] {
        // SAFETY: `len..capacity` lies inside the mapping and `&mut self` makes it exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.as_ptr().add(self.len),
                self.capacity - self.len,
            )
        }
    }

    /// Marks `n` more bytes of the spare tail as in use.
    pub fn commit(&mut self, n: usize) {
        self.len = (self.len + n).min(self.capacity);
    }

    /// Appends `bytes` if they fit; returns the range they occupy.
    pub fn push(&mut self, bytes: &[u8]) -> Option<std::ops::Range<usize>> {
        let start = self.len;
        let spare = self.spare_mut();
        if bytes.len() > spare.len() {
            return None;
        }
        spare[..bytes.len()].copy_from_slice(bytes);
        self.commit(bytes.len());
        Some(start..start + bytes.len())
    }

    /// Overwrites every byte of the mapping with zero and marks it empty.
    pub fn wipe(&mut self) {
        // SAFETY: the whole mapping is writable and exclusively borrowed.
        let all = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.capacity) };
        zeroize::Zeroize::zeroize(all);
        self.len = 0;
    }
}

impl Drop for LockedBuf {
    fn drop(&mut self) {
        self.wipe();
        let raw = self.ptr.as_ptr().cast::<libc::c_void>();
        // SAFETY: unlocking and unmapping the mapping this value owns; nothing refers to it
        // after drop.
        unsafe {
            libc::munlock(raw, self.capacity);
            libc::munmap(raw, self.capacity);
        }
    }
}

/// Where one secret lives inside a [`SecretArena`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretRange {
    start: usize,
    end: usize,
}

impl SecretRange {
    /// Length of the secret in bytes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// True for an empty secret.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// A sub-range, relative to this one's start.
    pub fn slice(&self, from: usize) -> SecretRange {
        SecretRange {
            start: (self.start + from).min(self.end),
            end: self.end,
        }
    }
}

/// Many secrets packed into one locked buffer, shared read-only once built.
///
/// Secrets are appended while the arena is being filled (during start-up, before any thread
/// exists) and then frozen behind an `Arc`. Nothing copies a secret out of it for the HTTP
/// stack: the upstream's key injector writes the bytes straight from here to the transport.
pub struct SecretArena {
    buf: LockedBuf,
}

impl SecretArena {
    /// A new arena with room for at least `capacity` bytes of secrets.
    pub fn with_capacity(capacity: usize) -> Result<Self, ArenaError> {
        Ok(SecretArena {
            buf: LockedBuf::new(capacity)?,
        })
    }

    /// Copies `parts` one after another into the arena as one secret.
    pub fn push_concat(&mut self, parts: &[&[u8]]) -> Option<SecretRange> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > self.buf.capacity() - self.buf.len() {
            return None;
        }
        let start = self.buf.len();
        for part in parts {
            self.buf.push(part)?;
        }
        Some(SecretRange {
            start,
            end: start + total,
        })
    }

    /// The bytes of one secret.
    pub fn get(&self, range: SecretRange) -> &[u8] {
        self.buf
            .as_slice()
            .get(range.start..range.end)
            .unwrap_or(&[])
    }

    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no secret is stored.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locked_buf_is_locked_and_wiped_on_request() {
        let mut buf = LockedBuf::new(10).unwrap();
        assert_eq!(buf.capacity() % page_size(), 0);
        let range = buf.push(b"secret").unwrap();
        assert_eq!(&buf.as_slice()[range], b"secret");
        buf.wipe();
        assert!(buf.is_empty());
        assert!(buf.spare_mut().iter().all(|b| *b == 0));
    }

    #[test]
    fn push_refuses_what_does_not_fit() {
        let mut buf = LockedBuf::new(1).unwrap();
        let cap = buf.capacity();
        assert!(buf.push(&vec![1u8; cap + 1]).is_none());
        assert!(buf.push(&vec![1u8; cap]).is_some());
    }

    #[test]
    fn arena_packs_secrets_and_hands_out_ranges() {
        let mut arena = SecretArena::with_capacity(64).unwrap();
        let range = arena.push_concat(&[b"Bearer ", b"sk-test"]).unwrap();
        let other = arena.push_concat(&[b"second"]).unwrap();
        assert_eq!(arena.get(range), b"Bearer sk-test");
        assert_eq!(arena.get(range.slice(7)), b"sk-test");
        assert_eq!(arena.get(other), b"second");
        assert!(
            arena.push_concat(&[&[0u8; 8192]]).is_none(),
            "refuses what does not fit"
        );
    }
}
