//! When to refresh the query planner's statistics.
//!
//! Both planners choose indexes by table statistics, and lists pick badly without them (a full
//! sort of 70,000 rows for a page of 50, BENCHMARKS.md finding S2). PostgreSQL's autovacuum
//! refreshes them when it runs, but it may be off; SQLite never does by itself. So the stores
//! count the rows they write and refresh after the tables changed by a quarter since the last
//! time (at least [`MIN_CHANGES`] rows) — PostgreSQL's own autoanalyze rule, with its defaults
//! (50 rows + 10 %) made coarser because a refresh blocks SQLite's writer for a moment.

use std::sync::atomic::{AtomicU64, Ordering};

/// No refresh for fewer changed rows than this.
pub const MIN_CHANGES: u64 = 1_000;

/// Counts changed rows; says when a refresh is due.
#[derive(Debug, Default)]
pub struct StatsTrigger {
    rows: AtomicU64,
    changed: AtomicU64,
}

impl StatsTrigger {
    /// Starts from a table of `rows` rows whose statistics are as fresh as they will get.
    pub fn new(rows: u64) -> Self {
        Self {
            rows: AtomicU64::new(rows),
            changed: AtomicU64::new(0),
        }
    }

    /// Records `inserted` new rows and `changed` updated or deleted ones; true when the caller
    /// should refresh statistics now (and the count starts over).
    pub fn record(&self, inserted: u64, changed: u64) -> bool {
        let rows = self.rows.fetch_add(inserted, Ordering::Relaxed) + inserted;
        let total = self
            .changed
            .fetch_add(inserted + changed, Ordering::Relaxed)
            + inserted
            + changed;
        let due = total >= MIN_CHANGES.max(rows / 4);
        // Only one caller wins the reset, so only one refresh runs per threshold.
        due && self
            .changed
            .compare_exchange(total, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_grow_apart_with_the_table() {
        let t = StatsTrigger::new(0);
        let mut refreshed_at = Vec::new();
        for row in 1..=100_000u64 {
            if t.record(1, 0) {
                refreshed_at.push(row);
            }
        }
        assert_eq!(refreshed_at[0], MIN_CHANGES);
        // Each refresh waits for a quarter of the table: ~20 refreshes for 100,000 inserts.
        assert!((15..=25).contains(&refreshed_at.len()), "{refreshed_at:?}");
        for w in refreshed_at.windows(2) {
            assert!(w[1] - w[0] >= MIN_CHANGES.max(w[1] / 4) - 1, "{w:?}");
        }
    }

    #[test]
    fn updates_count_without_growing_the_table() {
        let t = StatsTrigger::new(100_000);
        assert!(!t.record(0, 24_999));
        assert!(t.record(0, 1));
        assert!(!t.record(0, 1));
    }
}
