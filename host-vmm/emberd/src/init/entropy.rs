//! Entropy: init seeds nothing it cannot measure. Since Linux 5.4 the kernel makes its
//! CRNG ready by itself (a blocking `getrandom` runs the timer-jitter entropy
//! generator, `try_to_generate_entropy`, and on x86 RDRAND/RDSEED count when
//! `random.trust_cpu` is on, the default), and since 5.18 `/dev/urandom` and `getrandom`
//! are the same. So init only measures when the CRNG becomes ready and says so: the
//! worker's keys (registration) and the guests' seeds come from `getrandom` afterwards.

use std::time::Instant;

/// Waits until the kernel's CRNG is ready and logs how long that took.
pub fn report() {
    let mut byte = [0u8; 1];
    // SAFETY: getrandom writes at most one byte into `byte`.
    let ready_now =
        unsafe { libc::getrandom(byte.as_mut_ptr().cast(), 1, libc::GRND_NONBLOCK) } == 1;
    if ready_now {
        log::info!("entropy: the kernel's CRNG is ready");
        return;
    }
    let start = Instant::now();
    match getrandom::fill(&mut byte) {
        Ok(()) => log::info!(
            "entropy: the kernel's CRNG became ready after {:?} (its own jitter entropy)",
            start.elapsed()
        ),
        Err(e) => log::warn!("entropy: getrandom failed: {e}"),
    }
}
