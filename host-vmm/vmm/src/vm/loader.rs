//! Loads the guest ELF (linux-loader) and reads the image header it starts with.

use std::io::Cursor;

use ember_wire::boot::{ImageHeader, FAULT_STUB_STRIDE, FAULT_VECTORS, IMAGE_HEADER_SIZE};
use ember_wire::layout::{IMAGE_BASE, STACK_GUARD, STACK_SIZE};
use linux_loader::loader::{Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress};

use super::memory::GuestMemory;

use super::VmError;

/// Where the loaded image lives.
#[derive(Clone, Copy, Debug)]
pub struct LoadedImage {
    pub entry: u64,
    pub fault_stubs: u64,
    /// The guest's page-touch routine (see [`ImageHeader::touch_pages`]).
    pub touch_pages: u64,
    /// First page of writable data; code and read-only data lie below it.
    pub data_start: u64,
    /// First free byte after the image (page aligned).
    pub end: u64,
}

/// Smallest heap a guest is booted with.
const MIN_HEAP: u64 = 1 << 20;

pub fn load(mem: &GuestMemory, mem_size: u64, elf: &[u8]) -> Result<LoadedImage, VmError> {
    let bad = |what: String| VmError::Setup(format!("guest image: {what}"));
    let loaded = Elf::load(
        mem,
        None,
        &mut Cursor::new(elf),
        Some(GuestAddress(IMAGE_BASE)),
    )
    .map_err(|e| bad(format!("ELF load failed: {e}")))?;
    let mut raw = [0u8; IMAGE_HEADER_SIZE];
    mem.read_slice(&mut raw, GuestAddress(IMAGE_BASE))
        .map_err(|e| bad(e.to_string()))?;
    let header = ImageHeader::decode(&raw).map_err(|e| bad(format!("header: {e}")))?;
    let end = header
        .image_end
        .max(loaded.kernel_end)
        .next_multiple_of(4096);
    let stubs_end = header.fault_stubs + FAULT_VECTORS as u64 * FAULT_STUB_STRIDE;
    if header.fault_stubs < IMAGE_BASE || stubs_end > end {
        return Err(bad("fault stubs lie outside the image".into()));
    }
    let data_start = header.data_start & !4095;
    if !(IMAGE_BASE..=end).contains(&data_start)
        || !(IMAGE_BASE..data_start).contains(&header.touch_pages)
    {
        return Err(bad(
            "touch routine or data start lie outside the image".into()
        ));
    }
    if end + MIN_HEAP + STACK_SIZE + STACK_GUARD > mem_size {
        return Err(VmError::Config(format!(
            "{} MiB of guest memory cannot hold the {} KiB guest image, a heap and a stack",
            mem_size >> 20,
            (end - IMAGE_BASE) >> 10
        )));
    }
    Ok(LoadedImage {
        entry: loaded.kernel_load.0,
        fault_stubs: header.fault_stubs,
        touch_pages: header.touch_pages,
        data_start,
        end,
    })
}
