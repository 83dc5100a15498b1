//! A budget for log lines a guest causes: at most so many a second reach the host's log,
//! the rest are counted and reported in one line once the next second opens. A guest that
//! prints without pause then costs the operator's log a few lines a second, not its disk.

use std::time::{Duration, Instant};

/// One-second windows, each admitting up to `per_second` lines.
#[derive(Debug)]
pub struct LogBudget {
    per_second: u32,
    window: Instant,
    used: u32,
    dropped: u64,
}

/// Whether a line may be logged.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Log it; `dropped` lines were held back before it (say so first when not 0).
    Log { dropped: u64 },
    /// Over budget: count it and drop it.
    Drop,
}

impl LogBudget {
    pub fn new(per_second: u32) -> LogBudget {
        LogBudget {
            per_second,
            window: Instant::now(),
            used: 0,
            dropped: 0,
        }
    }

    /// Takes one line's place at `now`.
    pub fn admit(&mut self, now: Instant) -> Admit {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.used = 0;
        }
        if self.used >= self.per_second {
            self.dropped += 1;
            return Admit::Drop;
        }
        self.used += 1;
        Admit::Log {
            dropped: std::mem::take(&mut self.dropped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_budget_and_the_rest_counted() {
        let start = Instant::now();
        let mut budget = LogBudget::new(3);
        let first: Vec<Admit> = (0..10).map(|_| budget.admit(start)).collect();
        assert_eq!(first[..3], [0, 0, 0].map(|dropped| Admit::Log { dropped }));
        assert!(first[3..].iter().all(|a| *a == Admit::Drop));
        let later = start + Duration::from_millis(1500);
        assert_eq!(budget.admit(later), Admit::Log { dropped: 7 });
        assert_eq!(budget.admit(later), Admit::Log { dropped: 0 });
    }
}
