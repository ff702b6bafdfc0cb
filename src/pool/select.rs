//! Choosing the account for a request: a pure function, O(accounts).
//!
//! 1. Session affinity: the account this conversation used last, while it is available (for
//!    prompt-cache hits, and because encrypted reasoning is bound to the account).
//! 2. Otherwise round robin, starting at a rotating cursor, among the available accounts whose
//!    remaining quota is within [`QUOTA_BAND`] of the best one: load spreads evenly across the
//!    accounts with the most headroom and drifts away from nearly exhausted ones.
//!
//! Accounts already tried for this request (and failed for the account's own reasons) are
//! skipped.

/// Accounts whose remaining quota is this close to the best one share the load.
pub const QUOTA_BAND: f64 = 0.10;

/// What selection needs to know about one account.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Not cooling down and not disabled.
    pub available: bool,
    /// Remaining quota as a fraction (1.0 when unknown).
    pub remaining: f64,
}

/// The index of the account to use, if any is available.
pub fn select(
    candidates: &[Candidate],
    cursor: usize,
    affinity: Option<usize>,
    skip: &[usize],
) -> Option<usize> {
    let usable = |i: usize| candidates.get(i).is_some_and(|c| c.available) && !skip.contains(&i);
    if let Some(i) = affinity.filter(|i| usable(*i)) {
        return Some(i);
    }
    let best = (0..candidates.len())
        .filter(|i| usable(*i))
        .map(|i| candidates[i].remaining)
        .fold(None, |best: Option<f64>, r| {
            Some(best.map_or(r, |b| b.max(r)))
        })?;
    // Round robin over the band: the (cursor mod size)-th member, so gaps between members
    // do not favour the member after a gap.
    let in_band = |i: &usize| usable(*i) && candidates[*i].remaining >= best - QUOTA_BAND;
    let size = (0..candidates.len()).filter(in_band).count();
    (0..candidates.len())
        .filter(in_band)
        .nth(cursor % size.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(available: bool, remaining: f64) -> Candidate {
        Candidate {
            available,
            remaining,
        }
    }

    #[test]
    fn round_robin_over_available_accounts() {
        let cands = [c(true, 1.0), c(false, 1.0), c(true, 1.0)];
        let picks: Vec<_> = (0..4)
            .map(|cursor| select(&cands, cursor, None, &[]))
            .collect();
        assert_eq!(picks, vec![Some(0), Some(2), Some(0), Some(2)]);
    }

    #[test]
    fn affinity_wins_while_its_account_is_available() {
        let cands = [c(true, 1.0), c(true, 0.1), c(true, 1.0)];
        assert_eq!(
            select(&cands, 0, Some(1), &[]),
            Some(1),
            "even with less quota"
        );
        let cands = [c(true, 1.0), c(false, 1.0), c(true, 1.0)];
        assert_eq!(
            select(&cands, 0, Some(1), &[]),
            Some(0),
            "falls back when it is cooling"
        );
        assert_eq!(
            select(&cands, 0, Some(2), &[2]),
            Some(0),
            "or when it already failed this request"
        );
    }

    #[test]
    fn load_is_biased_to_the_most_remaining_quota() {
        let cands = [c(true, 0.2), c(true, 0.95), c(true, 0.9), c(true, 0.5)];
        let mut counts = [0usize; 4];
        for cursor in 0..400 {
            counts[select(&cands, cursor, None, &[]).unwrap()] += 1;
        }
        assert_eq!(
            counts[0] + counts[3],
            0,
            "nearly exhausted accounts rest: {counts:?}"
        );
        assert_eq!(
            (counts[1], counts[2]),
            (200, 200),
            "the two best share evenly: {counts:?}"
        );
    }

    #[test]
    fn tried_accounts_are_skipped_and_none_left_is_none() {
        let cands = [c(true, 1.0), c(true, 1.0)];
        assert_eq!(select(&cands, 0, None, &[0]), Some(1));
        assert_eq!(select(&cands, 0, None, &[0, 1]), None);
        assert_eq!(select(&[c(false, 1.0)], 0, None, &[]), None);
        assert_eq!(select(&[], 3, Some(0), &[]), None);
    }

    #[test]
    fn a_thousand_accounts_take_microseconds() {
        let cands: Vec<Candidate> = (0..1000)
            .map(|i| c(i % 7 != 0, (i % 100) as f64 / 100.0))
            .collect();
        // Not a timing assertion (benchmarks measure speed): one pass over the slice, and the
        // pick lands in the top band.
        let pick = select(&cands, 123, None, &[]).unwrap();
        assert!(cands[pick].available && cands[pick].remaining >= 0.99 - QUOTA_BAND);
    }
}
