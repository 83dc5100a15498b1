//! Concurrency across the fleet: control routes every invocation, so counting the ones in
//! flight here is the fleet-wide count. A function with reserved concurrency is counted
//! alone, up to its reservation; every other function of an account is counted in the
//! account's unreserved pool, up to what reservations leave of the account's limit
//! ([`InvokeLimit`]). An invocation takes a slot before it is sent and gives it back when
//! it ends, however it ends (the slot is released on drop, so a client that hangs up frees
//! it too).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ember_store::concurrency::InvokeLimit;

type Counts = Arc<Mutex<HashMap<(String, String), u32>>>;

/// The function name under which an account's unreserved pool is counted: no function is
/// named "".
const UNRESERVED: &str = "";

/// Invocations in flight per (account, function with a reservation) and per account's
/// unreserved pool.
#[derive(Debug, Default)]
pub struct InFlight {
    counts: Counts,
}

impl InFlight {
    /// A slot for one more invocation of `function`, unless `limit` (its reserved
    /// concurrency, or its account's unreserved pool) is used up; `None` means throttled.
    pub fn acquire(&self, account: &str, function: &str, limit: InvokeLimit) -> Option<Slot> {
        let (counted, limit) = match limit {
            InvokeLimit::Reserved(n) => (function, n),
            InvokeLimit::Unreserved(n) => (UNRESERVED, n),
        };
        let key = (account.to_owned(), counted.to_owned());
        let mut counts = lock(&self.counts);
        let count = counts.entry(key.clone()).or_default();
        if i64::from(*count) >= limit {
            if *count == 0 {
                counts.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(Slot {
            counts: self.counts.clone(),
            key,
        })
    }

    /// Invocations of `function` (a function with a reservation) in flight now.
    pub fn current(&self, account: &str, function: &str) -> u32 {
        lock(&self.counts)
            .get(&(account.to_owned(), function.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

/// One invocation's place in its function's count.
#[derive(Debug)]
pub struct Slot {
    counts: Counts,
    key: (String, String),
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

fn lock(counts: &Counts) -> MutexGuard<'_, HashMap<(String, String), u32>> {
    counts.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_function_up_to_the_reservation() {
        #[allow(non_snake_case)]
        fn Some(n: i64) -> InvokeLimit {
            InvokeLimit::Reserved(n)
        }
        let in_flight = InFlight::default();
        let a = in_flight.acquire("1", "f", Some(2)).unwrap();
        let b = in_flight.acquire("1", "f", Some(2)).unwrap();
        assert!(in_flight.acquire("1", "f", Some(2)).is_none());
        assert!(
            in_flight.acquire("1", "g", Some(2)).is_some(),
            "another function"
        );
        assert!(
            in_flight.acquire("2", "f", Some(2)).is_some(),
            "another account"
        );
        assert_eq!(in_flight.current("1", "f"), 2);
        drop(a);
        let c = in_flight.acquire("1", "f", Some(2)).unwrap();
        drop((b, c));
        assert_eq!(in_flight.current("1", "f"), 0);
        assert!(
            in_flight.acquire("1", "f", Some(0)).is_none(),
            "0 throttles all"
        );
    }

    #[test]
    fn functions_without_a_reservation_share_the_accounts_unreserved_pool() {
        let in_flight = InFlight::default();
        let pool = InvokeLimit::Unreserved(2);
        let a = in_flight.acquire("1", "f", pool).unwrap();
        let _b = in_flight.acquire("1", "g", pool).unwrap();
        assert!(
            in_flight.acquire("1", "h", pool).is_none(),
            "the pool is used up"
        );
        assert!(
            in_flight
                .acquire("1", "r", InvokeLimit::Reserved(1))
                .is_some(),
            "a reservation is apart from the pool"
        );
        assert!(
            in_flight.acquire("2", "f", pool).is_some(),
            "another account's pool"
        );
        drop(a);
        assert!(in_flight.acquire("1", "h", pool).is_some());
        assert!(in_flight
            .acquire("3", "f", InvokeLimit::Unreserved(0))
            .is_none());
    }
}
