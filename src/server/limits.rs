//! A global cap on request body bytes buffered at once (`--max-buffered-bytes`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes currently reserved by all requests, against a fixed cap.
#[derive(Debug)]
pub struct BufferBudget {
    used: AtomicUsize,
    cap: usize,
}

/// A reservation, returned to the budget on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<BufferBudget>,
    bytes: usize,
}

impl BufferBudget {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(BufferBudget {
            used: AtomicUsize::new(0),
            cap,
        })
    }

    /// An empty reservation to grow with [`Reservation::grow`].
    pub fn reserve_none(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: Arc::clone(self),
            bytes: 0,
        }
    }

    /// Bytes reserved right now (for tests and gauges).
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

impl Reservation {
    /// Reserves `more` bytes; false (and nothing reserved) when the cap would be exceeded.
    pub fn grow(&mut self, more: usize) -> bool {
        let budget = &self.budget;
        let ok = budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|total| *total <= budget.cap)
            })
            .is_ok();
        if ok {
            self.bytes += more;
        }
        ok
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Upstream buffers (held stream starts, aggregated answers) share the same cap.
impl crate::upstream::relay::ByteBudget for BufferBudget {
    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.cap)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_one_cap_and_return_on_drop() {
        let budget = BufferBudget::new(100);
        let mut a = budget.reserve_none();
        assert!(a.grow(60));
        let mut b = budget.reserve_none();
        assert!(!b.grow(41));
        assert!(b.grow(40));
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
