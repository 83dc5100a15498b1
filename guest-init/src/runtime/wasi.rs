//! The WASI preview 1 subset functions get: stdin is the event, stdout the response, stderr
//! the log, environment variables, arguments, clocks, random, `proc_exit`. Everything else
//! answers `ENOSYS` (or `EBADF` for descriptors we do not have) and never traps.
//!
//! Every pointer and length a module passes is checked against its linear memory.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use ember_wire::function::LOG_TAIL;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use wasmi::errors::{MemoryError, TableError};
use wasmi::{Caller, Error, Extern, FuncType, Linker, Memory, Module, ResourceLimiter, Val};
use wasmi_core::LimiterError;

use crate::clock::Clock;

pub const MODULE: &str = "wasi_snapshot_preview1";

mod errno {
    pub const SUCCESS: i32 = 0;
    pub const BADF: i32 = 8;
    pub const FAULT: i32 = 21;
    pub const INVAL: i32 = 28;
    pub const NOSYS: i32 = 52;
    pub const SPIPE: i32 = 70;
}

/// Most log bytes kept for streaming to the host per invocation; the rest is dropped with
/// a marker (the tail is always kept).
const LOG_STREAM_MAX: usize = 1 << 20;

/// Per-store state: the three streams, configuration, clock and random source.
pub struct Wasi {
    pub stdin: Vec<u8>,
    stdin_pos: usize,
    pub stdout: Vec<u8>,
    /// Log bytes not yet streamed to the host.
    pub log: Vec<u8>,
    log_dropped: bool,
    /// The last [`LOG_TAIL`] bytes of the log.
    tail: VecDeque<u8>,
    pub env: Vec<(String, String)>,
    pub clock: Clock,
    rng: ChaCha20Rng,
    pub limits: Limits,
}

impl Wasi {
    pub fn new(
        env: Vec<(String, String)>,
        seed: [u8; 32],
        clock: Clock,
        memory_limit: usize,
    ) -> Wasi {
        Wasi {
            stdin: Vec::new(),
            stdin_pos: 0,
            stdout: Vec::new(),
            log: Vec::new(),
            log_dropped: false,
            tail: VecDeque::new(),
            env,
            clock,
            rng: ChaCha20Rng::from_seed(seed),
            limits: Limits {
                memory_limit,
                denied: false,
            },
        }
    }

    /// Starts an invocation: a new event, empty output and log.
    pub fn begin(&mut self, event: Vec<u8>) {
        self.stdin = event;
        self.stdin_pos = 0;
        self.stdout.clear();
        self.log.clear();
        self.log_dropped = false;
        self.tail.clear();
        self.limits.denied = false;
    }

    /// A fresh random sequence, drawn from `seeds`.
    pub fn reseed(&mut self, seeds: &mut ChaCha20Rng) {
        let mut seed = [0u8; 32];
        seeds.fill_bytes(&mut seed);
        self.rng = ChaCha20Rng::from_seed(seed);
    }

    pub fn log_tail(&self) -> Vec<u8> {
        self.tail.iter().copied().collect()
    }

    fn write_log(&mut self, bytes: &[u8]) {
        let room = LOG_STREAM_MAX.saturating_sub(self.log.len());
        self.log.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if bytes.len() > room && !self.log_dropped {
            self.log_dropped = true;
            self.log.extend_from_slice(b"\n[ember: log truncated]\n");
        }
        let skip = bytes.len().saturating_sub(LOG_TAIL);
        self.tail.extend(&bytes[skip..]);
        let excess = self.tail.len().saturating_sub(LOG_TAIL);
        self.tail.drain(..excess);
    }
}

/// Caps linear memory, remembering whether a grow was refused (that is what turns a later
/// trap into "out of memory").
pub struct Limits {
    memory_limit: usize,
    pub denied: bool,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        let allowed = desired <= self.memory_limit;
        self.denied |= !allowed;
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, _error: &MemoryError) -> Result<(), LimiterError> {
        self.denied = true;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        Ok(desired <= 100_000)
    }

    fn table_grow_failed(&mut self, _error: &TableError) -> Result<(), LimiterError> {
        Ok(())
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        16
    }

    fn memories(&self) -> usize {
        1
    }
}

type Ctx<'a> = Caller<'a, Wasi>;

fn memory(caller: &Ctx<'_>) -> Option<Memory> {
    caller.get_export("memory").and_then(Extern::into_memory)
}

/// Runs `f` on the module's memory and our state; `EFAULT` if there is no memory.
fn with_memory(
    caller: &mut Ctx<'_>,
    f: impl FnOnce(&mut [u8], &mut Wasi) -> Result<(), i32>,
) -> i32 {
    let Some(mem) = memory(caller) else {
        return errno::FAULT;
    };
    let (data, wasi) = mem.data_and_store_mut(caller);
    match f(data, wasi) {
        Ok(()) => errno::SUCCESS,
        Err(e) => e,
    }
}

fn slice(mem: &[u8], ptr: i32, len: usize) -> Result<&[u8], i32> {
    let start = ptr as u32 as usize;
    mem.get(start..start.checked_add(len).ok_or(errno::FAULT)?)
        .ok_or(errno::FAULT)
}

fn slice_mut(mem: &mut [u8], ptr: i32, len: usize) -> Result<&mut [u8], i32> {
    let start = ptr as u32 as usize;
    mem.get_mut(start..start.checked_add(len).ok_or(errno::FAULT)?)
        .ok_or(errno::FAULT)
}

fn put_u32(mem: &mut [u8], ptr: i32, v: u32) -> Result<(), i32> {
    slice_mut(mem, ptr, 4)?.copy_from_slice(&v.to_le_bytes());
    Ok(())
}

fn put_u64(mem: &mut [u8], ptr: i32, v: u64) -> Result<(), i32> {
    slice_mut(mem, ptr, 8)?.copy_from_slice(&v.to_le_bytes());
    Ok(())
}

fn get_u32(mem: &[u8], ptr: i32) -> Result<u32, i32> {
    Ok(u32::from_le_bytes(slice(mem, ptr, 4)?.try_into().unwrap()))
}

/// The `(ptr, len)` pairs of an iovec array.
fn iovecs(mem: &[u8], iovs: i32, count: i32) -> Result<Vec<(i32, usize)>, i32> {
    let count = usize::try_from(count).map_err(|_| errno::INVAL)?;
    if count > 1024 {
        return Err(errno::INVAL);
    }
    (0..count)
        .map(|i| {
            let at = iovs.wrapping_add((i * 8) as i32);
            Ok((
                get_u32(mem, at)? as i32,
                get_u32(mem, at.wrapping_add(4))? as usize,
            ))
        })
        .collect()
}

/// Writes `items` as a WASI string list: pointers at `ptrs`, NUL-terminated bytes at `buf`.
fn put_strings(mem: &mut [u8], ptrs: i32, buf: i32, items: &[Vec<u8>]) -> Result<(), i32> {
    let mut at = buf as u32;
    for (i, item) in items.iter().enumerate() {
        put_u32(mem, ptrs.wrapping_add((i * 4) as i32), at)?;
        let dst = slice_mut(mem, at as i32, item.len() + 1)?;
        dst[..item.len()].copy_from_slice(item);
        dst[item.len()] = 0;
        at = at.wrapping_add(item.len() as u32 + 1);
    }
    Ok(())
}

fn env_strings(wasi: &Wasi) -> Vec<Vec<u8>> {
    wasi.env
        .iter()
        .map(|(k, v)| {
            let mut s = Vec::with_capacity(k.len() + v.len() + 1);
            s.extend_from_slice(k.as_bytes());
            s.push(b'=');
            s.extend_from_slice(v.as_bytes());
            s
        })
        .collect()
}

const ARGS: [&[u8]; 1] = [b"function"];

/// Adds our WASI functions to `linker`, and an `ENOSYS` stub for every other WASI import
/// `module` has. Imports from any other module are refused by name.
pub fn link(linker: &mut Linker<Wasi>, module: &Module) -> Result<(), String> {
    let e = |err: wasmi::errors::LinkerError| alloc::format!("{err}");
    linker
        .func_wrap(
            MODULE,
            "fd_write",
            |mut c: Ctx<'_>, fd: i32, iovs: i32, n: i32, out: i32| {
                with_memory(&mut c, |mem, wasi| {
                    if !(1..=2).contains(&fd) {
                        return Err(errno::BADF);
                    }
                    let mut total = 0usize;
                    for (ptr, len) in iovecs(mem, iovs, n)? {
                        let bytes = slice(mem, ptr, len)?;
                        if fd == 1 {
                            wasi.stdout.extend_from_slice(bytes);
                        } else {
                            wasi.write_log(bytes);
                        }
                        total += len;
                    }
                    put_u32(mem, out, total as u32)
                })
            },
        )
        .map_err(e)?;
    linker
        .func_wrap(
            MODULE,
            "fd_read",
            |mut c: Ctx<'_>, fd: i32, iovs: i32, n: i32, out: i32| {
                with_memory(&mut c, |mem, wasi| {
                    if fd != 0 {
                        return Err(errno::BADF);
                    }
                    let mut total = 0usize;
                    for (ptr, len) in iovecs(mem, iovs, n)? {
                        let rest = &wasi.stdin[wasi.stdin_pos..];
                        let take = rest.len().min(len);
                        slice_mut(mem, ptr, take)?.copy_from_slice(&rest[..take]);
                        wasi.stdin_pos += take;
                        total += take;
                    }
                    put_u32(mem, out, total as u32)
                })
            },
        )
        .map_err(e)?;
    linker
        .func_wrap(
            MODULE,
            "fd_fdstat_get",
            |mut c: Ctx<'_>, fd: i32, out: i32| {
                with_memory(&mut c, |mem, _| {
                    if !(0..=2).contains(&fd) {
                        return Err(errno::BADF);
                    }
                    let stat = slice_mut(mem, out, 24)?;
                    stat.fill(0);
                    stat[0] = 2; // character device
                    let rights: u64 = if fd == 0 { 1 << 1 } else { 1 << 6 }; // fd_read / fd_write
                    stat[8..16].copy_from_slice(&rights.to_le_bytes());
                    Ok(())
                })
            },
        )
        .map_err(e)?;
    linker
        .func_wrap(MODULE, "fd_close", |fd: i32| {
            if (0..=2).contains(&fd) {
                errno::SUCCESS
            } else {
                errno::BADF
            }
        })
        .map_err(e)?;
    linker
        .func_wrap(
            MODULE,
            "fd_seek",
            |fd: i32, _off: i64, _whence: i32, _out: i32| {
                if (0..=2).contains(&fd) {
                    errno::SPIPE
                } else {
                    errno::BADF
                }
            },
        )
        .map_err(e)?;
    linker
        .func_wrap(MODULE, "fd_prestat_get", |_fd: i32, _out: i32| errno::BADF)
        .map_err(e)?;
    linker
        .func_wrap(
            MODULE,
            "fd_prestat_dir_name",
            |_fd: i32, _p: i32, _l: i32| errno::BADF,
        )
        .map_err(e)?;
    linker
        .func_wrap(
            MODULE,
            "environ_sizes_get",
            |mut c: Ctx<'_>, count: i32, size: i32| {
                with_memory(&mut c, |mem, wasi| {
                    let strings = env_strings(wasi);
                    put_u32(mem, count, strings.len() as u32)?;
                    put_u32(mem, size, strings.iter().map(|s| s.len() as u32 + 1).sum())
                })
            },
        )
        .map_err(e)?;
    linker
        .func_wrap(
            MODULE,
            "environ_get",
            |mut c: Ctx<'_>, ptrs: i32, buf: i32| {
                with_memory(&mut c, |mem, wasi| {
                    put_strings(mem, ptrs, buf, &env_strings(wasi))
                })
            },
        )
        .map_err(e)?;
    linker
        .func_wrap(
            MODULE,
            "args_sizes_get",
            |mut c: Ctx<'_>, count: i32, size: i32| {
                with_memory(&mut c, |mem, _| {
                    put_u32(mem, count, ARGS.len() as u32)?;
                    put_u32(mem, size, ARGS.iter().map(|a| a.len() as u32 + 1).sum())
                })
            },
        )
        .map_err(e)?;
    linker
        .func_wrap(MODULE, "args_get", |mut c: Ctx<'_>, ptrs: i32, buf: i32| {
            with_memory(&mut c, |mem, _| {
                let args: Vec<Vec<u8>> = ARGS.iter().map(|a| a.to_vec()).collect();
                put_strings(mem, ptrs, buf, &args)
            })
        })
        .map_err(e)?;
    linker
        .func_wrap(
            MODULE,
            "clock_res_get",
            |mut c: Ctx<'_>, id: i32, out: i32| {
                with_memory(&mut c, |mem, _| {
                    if !(0..=3).contains(&id) {
                        return Err(errno::INVAL);
                    }
                    put_u64(mem, out, 1)
                })
            },
        )
        .map_err(e)?;
    linker
        .func_wrap(
            MODULE,
            "clock_time_get",
            |mut c: Ctx<'_>, id: i32, _precision: i64, out: i32| {
                with_memory(&mut c, |mem, wasi| {
                    let now = match id {
                        0 => wasi.clock.realtime_ns(),
                        1..=3 => wasi.clock.monotonic_ns(),
                        _ => return Err(errno::INVAL),
                    };
                    put_u64(mem, out, now)
                })
            },
        )
        .map_err(e)?;
    linker
        .func_wrap(
            MODULE,
            "random_get",
            |mut c: Ctx<'_>, buf: i32, len: i32| {
                with_memory(&mut c, |mem, wasi| {
                    let dst = slice_mut(mem, buf, len as u32 as usize)?;
                    wasi.rng.fill_bytes(dst);
                    Ok(())
                })
            },
        )
        .map_err(e)?;
    linker
        .func_wrap(MODULE, "sched_yield", || errno::SUCCESS)
        .map_err(e)?;
    linker
        .func_wrap(MODULE, "proc_exit", |code: i32| -> Result<(), Error> {
            Err(Error::i32_exit(code))
        })
        .map_err(e)?;

    for import in module.imports() {
        if import.module() != MODULE {
            return Err(alloc::format!(
                "unsupported import {}.{} (only {MODULE} is provided)",
                import.module(),
                import.name()
            ));
        }
        let Some(ty) = import.ty().func() else {
            return Err(alloc::format!(
                "unsupported non-function import {MODULE}.{}",
                import.name()
            ));
        };
        // Defining a name we already implement fails as a duplicate, which is what we want.
        let _ = define_enosys(linker, import.name(), ty.clone());
    }
    Ok(())
}

/// A stub that returns `ENOSYS` (or zero values for a non-errno signature).
fn define_enosys(
    linker: &mut Linker<Wasi>,
    name: &str,
    ty: FuncType,
) -> Result<(), wasmi::errors::LinkerError> {
    let results: Vec<Val> = ty
        .results()
        .iter()
        .map(|t| match t {
            wasmi::ValType::I32 => Val::I32(errno::NOSYS),
            other => Val::default_for_ty(*other),
        })
        .collect();
    linker
        .func_new(MODULE, name, ty, move |_c, _params, out| {
            out.clone_from_slice(&results);
            Ok(())
        })
        .map(drop)
}
