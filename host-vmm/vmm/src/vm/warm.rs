//! The host-memory side of warming a spare VM (see [`super::SpareVm`]): making the pages
//! it will write its own before the guest first touches them, and later giving back those
//! its environment never used. Runs on the vCPU thread, which owns guest memory.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use crate::memory::{self, data_pages, host_base, is_zero, GuestMemory, MemoryError, PAGE_SIZE};

/// Why warming or trimming guest memory failed.
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("{0}")]
    Memory(#[from] MemoryError),
    #[error("cannot privatize {0:x?}")]
    Range(Range<u64>),
    #[error("reading the base snapshot: {0}")]
    ReadBase(#[source] io::Error),
    #[error("mmap: {0}")]
    Map(#[source] io::Error),
    #[error("madvise({advice}): {source}")]
    Advise {
        advice: libc::c_int,
        source: io::Error,
    },
    #[error("guest page {0:#x} differs from its snapshot")]
    Changed(usize),
}

/// Makes the guest pages `pages` (page aligned, in a VM mapped copy-on-write over `base`
/// whose guest has never run) the VM's own, in one call instead of a fault per page. Pages
/// that are holes or zeros in `base` become anonymous memory (zeros all the same, without
/// filling holes in `base`'s memfd, and a trim can give them back later); the others are
/// copied. Returns the page ranges that became anonymous.
pub fn privatize(
    mem: &GuestMemory,
    base: &File,
    pages: Range<u64>,
) -> Result<Vec<Range<usize>>, WarmError> {
    let host = host_base(mem)?;
    let size = memory::size(mem)?;
    if pages.end as usize > size || !pages.start.is_multiple_of(PAGE_SIZE as u64) {
        return Err(WarmError::Range(pages));
    }
    let (first, end) = (
        pages.start as usize / PAGE_SIZE,
        pages.end as usize / PAGE_SIZE,
    );
    let mut holes = Vec::new();
    let mut at = first;
    let mut page = vec![0u8; PAGE_SIZE];
    for p in data_pages(base, size)? {
        if !(first..end).contains(&p) {
            continue;
        }
        base.read_exact_at(&mut page, (p * PAGE_SIZE) as u64)
            .map_err(WarmError::ReadBase)?;
        if is_zero(&page) {
            continue;
        }
        if p > at {
            holes.push(at..p);
        }
        at = p + 1;
    }
    if at < end {
        holes.push(at..end);
    }
    for hole in &holes {
        // SAFETY: the run lies inside this VM's guest mapping, which nothing has touched
        // yet (the guest never ran), and reads as zeros before and after.
        let mapped = unsafe {
            libc::mmap(
                host.add(hole.start * PAGE_SIZE).cast(),
                hole.len() * PAGE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            return Err(WarmError::Map(io::Error::last_os_error()));
        }
    }
    // SAFETY: the range lies inside guest memory; populating only faults its pages in.
    unsafe { advise(host, first..end, libc::MADV_POPULATE_WRITE) }?;
    Ok(holes)
}

/// Gives back the host memory of the pages in `anonymous` (ranges [`privatize`] made
/// anonymous) that hold only zeros: they read as zeros again, faulting in when next used.
/// The vCPU must not be running. Returns how many pages were given back.
pub fn trim(mem: &GuestMemory, anonymous: &[Range<usize>]) -> Result<usize, WarmError> {
    let host = host_base(mem)?;
    // SAFETY: the ranges came from `privatize` on this memory, and the vCPU is not running.
    let zero = |p: usize| unsafe {
        is_zero(std::slice::from_raw_parts(
            host.add(p * PAGE_SIZE),
            PAGE_SIZE,
        ))
    };
    let mut given = 0;
    for range in anonymous {
        let mut p = range.start;
        while p < range.end {
            let start = p;
            while p < range.end && zero(p) {
                p += 1;
            }
            if p > start {
                // SAFETY: the run lies inside guest memory, and anonymous pages of zeros
                // read as zeros after MADV_DONTNEED.
                unsafe { advise(host, start..p, libc::MADV_DONTNEED) }?;
                given += p - start;
            }
            p += 1;
        }
    }
    Ok(given)
}

/// Fails unless guest pages `pages` hold what they hold in `base`.
pub fn check_unchanged(mem: &GuestMemory, base: &File, pages: Range<u64>) -> Result<(), WarmError> {
    let host = host_base(mem)?;
    let mut was = vec![0u8; PAGE_SIZE];
    for p in pages.start as usize / PAGE_SIZE..pages.end as usize / PAGE_SIZE {
        base.read_exact_at(&mut was, (p * PAGE_SIZE) as u64)
            .map_err(WarmError::ReadBase)?;
        // SAFETY: callers pass pages inside guest memory, with the vCPU not running.
        let now = unsafe { std::slice::from_raw_parts(host.add(p * PAGE_SIZE), PAGE_SIZE) };
        if now != was.as_slice() {
            return Err(WarmError::Changed(p));
        }
    }
    Ok(())
}

/// `madvise` over guest pages `pages`.
///
/// # Safety
/// `pages` must lie inside the guest mapping at `host`, and `advice` must keep its
/// contents as the guest expects them.
unsafe fn advise(host: *mut u8, pages: Range<usize>, advice: libc::c_int) -> Result<(), WarmError> {
    // SAFETY: see the contract above.
    let done = unsafe {
        libc::madvise(
            host.add(pages.start * PAGE_SIZE).cast(),
            pages.len() * PAGE_SIZE,
            advice,
        )
    };
    if done != 0 {
        return Err(WarmError::Advise {
            advice,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}
