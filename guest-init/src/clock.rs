//! Time for functions: the host sends its wall clock with every request and the guest
//! extrapolates with the TSC (frequency from boot info). Re-anchoring on every request keeps
//! the clock right after a snapshot restore, when the TSC starts over.

use crate::arch;

#[derive(Clone, Copy)]
pub struct Clock {
    tsc_khz: u64,
    anchor_tsc: u64,
    anchor_unix_ns: u64,
    last_monotonic: u64,
}

impl Clock {
    pub fn new(tsc_khz: u64) -> Clock {
        Clock {
            tsc_khz: tsc_khz.max(1),
            anchor_tsc: arch::rdtsc(),
            anchor_unix_ns: 0,
            last_monotonic: 0,
        }
    }

    /// Anchors the clock to the host's wall clock, read just before it sent `unix_ns`.
    pub fn sync(&mut self, unix_ns: u64) {
        self.anchor_tsc = arch::rdtsc();
        self.anchor_unix_ns = unix_ns;
    }

    /// Nanoseconds since the last `sync`.
    pub fn elapsed_ns(&self) -> u64 {
        let ticks = arch::rdtsc().wrapping_sub(self.anchor_tsc);
        (ticks as u128 * 1_000_000 / self.tsc_khz as u128) as u64
    }

    pub fn realtime_ns(&self) -> u64 {
        self.anchor_unix_ns.saturating_add(self.elapsed_ns())
    }

    /// Never goes backwards, even if the host's wall clock does.
    pub fn monotonic_ns(&mut self) -> u64 {
        self.last_monotonic = self.last_monotonic.max(self.realtime_ns());
        self.last_monotonic
    }
}
