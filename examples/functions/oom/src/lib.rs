//! A reactor function that never returns: it allocates 1 MiB blocks, writing to each so the
//! memory is really used, until an allocation fails. The global allocator's failure handler
//! logs "memory allocation of 1048576 bytes failed" to stderr and aborts, which with
//! `panic = "abort"` is a wasm trap (`unreachable`): a function error.

const MIB: usize = 1024 * 1024;

/// The reactor's start function: the runtime calls it once, right after instantiation.
/// Rust does not provide one for a cdylib, so define it here: it runs the module's static
/// constructors (wasi-libc's and any dependency's). Referencing `__wasm_call_ctors` also stops
/// the linker from treating the module as a command, which wraps every export to run the
/// constructors before and the destructors after each call.
#[unsafe(no_mangle)]
pub extern "C" fn _initialize() {
    unsafe extern "C" {
        fn __wasm_call_ctors();
    }
    // SAFETY: the linker-synthesised constructor list; the runtime calls `_initialize` once.
    unsafe { __wasm_call_ctors() }
}

#[unsafe(no_mangle)]
pub extern "C" fn handle() {
    eprintln!("oom: allocating 1 MiB blocks until memory runs out");
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = Vec::with_capacity(MIB);
        block.resize(MIB, 0xa5);
        // Keep the optimizer from proving the blocks unused and dropping the allocations.
        blocks.push(std::hint::black_box(block));
    }
}
