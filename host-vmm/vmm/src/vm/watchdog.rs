//! Deadlines that stop a VM whatever the host thread driving it is doing: one thread for
//! the whole process, waiting for the earliest deadline in a heap. Arming and disarming
//! cost a lock and a map update each, not a thread or a timer per invocation.
//!
//! When a deadline passes, the watchdog asks the vCPU to stop, fails every stream of the
//! VM (so a host thread blocked on one returns at once), and knocks the vCPU thread out of
//! guest code, again every few milliseconds until it has left its run loop. The owner of
//! the [`super::Vm`] still tears it down (joining the thread) when it sees the error.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ember_jail::seccomp::BpfProgram;

use super::Stopper;

/// How often a fired deadline knocks a vCPU that has not stopped yet.
const KICK_EVERY: Duration = Duration::from_millis(5);

/// Why the watchdog stopped a VM (what its streams fail with).
#[derive(Debug, thiserror::Error)]
#[error("the deadline passed: stopped by the host's watchdog")]
pub struct DeadlinePassed;

struct Entry {
    stopper: Stopper,
    fired: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    /// Deadlines with the id of their entry; an id no longer in `entries` is stale.
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    entries: HashMap<u64, Entry>,
    next_id: u64,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// The seccomp filter the watchdog thread adds for itself, in a VM process (see [`confine`]).
static CONFINEMENT: OnceLock<BpfProgram> = OnceLock::new();

/// The watchdog thread, once started, narrows itself to `program` before it waits for a
/// deadline. Call before the first [`arm`]: the thread starts with it.
pub fn confine(program: BpfProgram) {
    let _ = CONFINEMENT.set(program);
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<&'static Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            state: Mutex::default(),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("vm-watchdog".into())
            .spawn(move || watch(shared))
            .expect("spawning the VM watchdog");
        shared
    })
}

/// A deadline for one VM; dropping it disarms it.
pub struct Armed {
    id: u64,
    fired: Arc<AtomicBool>,
}

impl Armed {
    /// Whether the deadline passed and the watchdog stopped the VM.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Disarms the deadline; whether it had fired first (then the VM is being stopped,
    /// whatever its reply said).
    pub fn disarm(self) -> bool {
        let fired = self.fired.clone();
        drop(self);
        fired.load(Ordering::SeqCst)
    }
}

/// Stops the VM behind `stopper` at `deadline`, unless the returned guard is dropped first.
pub fn arm(deadline: Instant, stopper: Stopper) -> Armed {
    let shared = shared();
    let fired = Arc::new(AtomicBool::new(false));
    let mut st = shared.state.lock().unwrap();
    let id = st.next_id;
    st.next_id += 1;
    let earliest = st.heap.peek().is_none_or(|Reverse((d, _))| deadline < *d);
    st.entries.insert(
        id,
        Entry {
            stopper,
            fired: fired.clone(),
        },
    );
    st.heap.push(Reverse((deadline, id)));
    drop(st);
    if earliest {
        shared.changed.notify_one();
    }
    Armed { id, fired }
}

impl Drop for Armed {
    fn drop(&mut self) {
        let mut st = shared().state.lock().unwrap();
        st.entries.remove(&self.id);
        // Disarmed deadlines stay in the heap until they come due; keep them from piling
        // up when timeouts are long and invocations many.
        if st.heap.len() > 2 * st.entries.len() + 64 {
            let State { heap, entries, .. } = &mut *st;
            heap.retain(|Reverse((_, id))| entries.contains_key(id));
        }
    }
}

fn watch(shared: &'static Shared) {
    if let Some(program) = CONFINEMENT.get() {
        if let Err(e) = ember_jail::seccomp::apply_to_thread(program) {
            // Without a watchdog no deadline holds; the process must not go on.
            log::error!("the watchdog thread's filter: {e}");
            std::process::exit(1);
        }
    }
    let mut st = shared.state.lock().unwrap();
    loop {
        let now = Instant::now();
        match st.heap.peek().copied() {
            None => st = shared.changed.wait(st).unwrap(),
            Some(Reverse((deadline, _))) if deadline > now => {
                st = shared.changed.wait_timeout(st, deadline - now).unwrap().0;
            }
            Some(Reverse((_, id))) => {
                st.heap.pop();
                let Some(entry) = st.entries.get(&id) else {
                    continue;
                };
                if !entry.fired.swap(true, Ordering::SeqCst) {
                    log::debug!("stopping a VM at its deadline");
                    entry.stopper.request_stop(Arc::new(DeadlinePassed));
                }
                if entry.stopper.kick() {
                    st.heap.push(Reverse((now + KICK_EVERY, id)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arming_and_disarming_is_cheap() {
        let stopper = Stopper::detached();
        let rounds = 100_000;
        let start = Instant::now();
        for _ in 0..rounds {
            let armed = arm(Instant::now() + Duration::from_secs(3), stopper.clone());
            assert!(!armed.disarm());
        }
        let each = start.elapsed() / rounds;
        eprintln!("arm + disarm: {each:?}");
        assert!(each < Duration::from_micros(20), "{each:?} per invocation");
    }

    #[test]
    fn disarmed_deadlines_do_not_pile_up() {
        let far = Instant::now() + Duration::from_secs(3600);
        for _ in 0..10_000 {
            drop(arm(far, Stopper::detached()));
        }
        let st = shared().state.lock().unwrap();
        assert!(
            st.heap.len() <= 2 * st.entries.len() + 65,
            "{}",
            st.heap.len()
        );
    }
}
