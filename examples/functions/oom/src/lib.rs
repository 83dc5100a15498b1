//! A reactor function that never returns: it allocates 1 MiB blocks, writing to each so the
//! memory is really used, until an allocation fails. The global allocator's failure handler
//! logs "memory allocation of 1048576 bytes failed" to stderr and aborts, which with
//! `panic = "abort"` is a wasm trap (`unreachable`): a function error.

use std::convert::Infallible;

ember_function::reactor!(exhaust_memory);

const MIB: usize = 1024 * 1024;

fn exhaust_memory(_event: &[u8]) -> Result<Vec<u8>, Infallible> {
    eprintln!("oom: allocating 1 MiB blocks until memory runs out");
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = Vec::with_capacity(MIB);
        block.resize(MIB, 0xa5);
        // Keep the optimizer from proving the blocks unused and dropping the allocations.
        blocks.push(std::hint::black_box(block));
    }
}
