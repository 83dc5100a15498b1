//! Loads the guest ELF (linux-loader) and reads the image header it starts with.

use std::io::Cursor;

use ember_wire::boot::{ImageHeader, FAULT_STUB_STRIDE, FAULT_VECTORS, IMAGE_HEADER_SIZE};
use ember_wire::layout::{IMAGE_BASE, STACK_GUARD, STACK_SIZE};
use linux_loader::loader::{Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use super::config::ConfigError;
use super::error::VmError;
use crate::memory::GuestMemory;

/// Why the guest image could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("ELF load failed: {0}")]
    Elf(#[source] linux_loader::loader::Error),
    #[error("{0}")]
    ReadHeader(#[source] GuestMemoryError),
    #[error("header: {0}")]
    Header(#[source] ember_wire::boot::BootError),
    #[error("fault stubs lie outside the image")]
    FaultStubs,
    #[error("touch routine or data start lie outside the image")]
    Layout,
}

/// Where the loaded image lives.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
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

/// Loads `elf` into guest memory of `mem_size` bytes; refuses a memory too small for it,
/// a heap and a stack.
pub fn load(mem: &GuestMemory, mem_size: u64, elf: &[u8]) -> Result<LoadedImage, VmError> {
    let loaded = Elf::load(
        mem,
        None,
        &mut Cursor::new(elf),
        Some(GuestAddress(IMAGE_BASE)),
    )
    .map_err(ImageError::Elf)?;
    let mut raw = [0u8; IMAGE_HEADER_SIZE];
    mem.read_slice(&mut raw, GuestAddress(IMAGE_BASE))
        .map_err(ImageError::ReadHeader)?;
    let header = ImageHeader::decode(&raw).map_err(ImageError::Header)?;
    let end = header
        .image_end
        .max(loaded.kernel_end)
        .next_multiple_of(4096);
    let stubs_end = header.fault_stubs + FAULT_VECTORS as u64 * FAULT_STUB_STRIDE;
    if header.fault_stubs < IMAGE_BASE || stubs_end > end {
        return Err(ImageError::FaultStubs.into());
    }
    let data_start = header.data_start & !4095;
    if !(IMAGE_BASE..=end).contains(&data_start)
        || !(IMAGE_BASE..data_start).contains(&header.touch_pages)
    {
        return Err(ImageError::Layout.into());
    }
    if end + MIN_HEAP + STACK_SIZE + STACK_GUARD > mem_size {
        return Err(ConfigError::TooSmall {
            mem_mib: mem_size >> 20,
            image_kib: (end - IMAGE_BASE) >> 10,
        }
        .into());
    }
    Ok(LoadedImage {
        entry: loaded.kernel_load.0,
        fault_stubs: header.fault_stubs,
        touch_pages: header.touch_pages,
        data_start,
        end,
    })
}
