//! The unified kernel image: systemd's EFI stub (`linuxx64.efi.stub` from Debian's
//! `systemd-boot-efi`) with the kernel, initramfs, command line and os-release added as
//! the PE sections `.linux`, `.initrd`, `.cmdline` and `.osrel`, which the stub finds
//! by name at boot. The `object` crate parses the PE headers and provides their layouts;
//! it has no way to add sections to an existing image, so this module appends them:
//! a header each in the slack after the section table, the data at the end of the file,
//! each section at the next page (a multiple of the stub's `SectionAlignment`, which is
//! only 512 bytes in Debian's 252 stub) after everything already there, so that the
//! kernel and initramfs the stub hands on start page-aligned in memory.

use anyhow::{bail, Context, Result};
use object::pe::{
    ImageDosHeader, ImageNtHeaders64, ImageSectionHeader, IMAGE_SCN_CNT_INITIALIZED_DATA,
    IMAGE_SCN_MEM_READ,
};
use object::pod;
use object::read::pe::ImageNtHeaders;
use object::{LittleEndian as LE, U16, U32};

const PAGE: u64 = 4096;

/// Adds `sections` (name, contents), in order, to the PE image `stub`.
pub fn assemble(stub: &[u8], sections: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    let dos = ImageDosHeader::parse(stub).context("the EFI stub is not a PE image")?;
    let nt_offset = dos.nt_headers_offset() as usize;
    let mut table_offset = u64::from(dos.nt_headers_offset());
    let (nt, _) = ImageNtHeaders64::parse(stub, &mut table_offset)
        .context("the EFI stub is not a PE32+ image")?;
    let table_offset = table_offset as usize;
    let opt = nt.optional_header;
    let section_alignment = u64::from(opt.section_alignment.get(LE)).max(PAGE);
    let file_alignment = u64::from(opt.file_alignment.get(LE));
    let count = usize::from(nt.file_header.number_of_sections.get(LE));
    let existing: &[ImageSectionHeader] = pod::slice_from_bytes(&stub[table_offset..], count)
        .map_err(|()| anyhow::anyhow!("the EFI stub's section table is truncated"))?
        .0;

    // The new headers must fit between the table and the first section's data.
    let header_room = existing
        .iter()
        .map(|s| s.pointer_to_raw_data.get(LE))
        .filter(|&p| p != 0)
        .chain([opt.size_of_headers.get(LE)])
        .min()
        .unwrap_or_default() as usize;
    let table_end = table_offset + (count + sections.len()) * size_of::<ImageSectionHeader>();
    if table_end > header_room {
        bail!(
            "the EFI stub has room for {} more section headers, {} are needed",
            (header_room.saturating_sub(table_offset) / size_of::<ImageSectionHeader>())
                .saturating_sub(count),
            sections.len()
        );
    }

    let mut next_va = existing
        .iter()
        .map(|s| {
            let size = s.virtual_size.get(LE).max(s.size_of_raw_data.get(LE));
            u64::from(s.virtual_address.get(LE)) + u64::from(size)
        })
        .max()
        .unwrap_or_default();
    let mut out = stub.to_vec();
    let mut headers = Vec::new();
    let mut added_data = 0u64;
    for (name, data) in sections {
        let mut short = [0u8; 8];
        if name.len() > short.len() {
            bail!("PE section name {name} is longer than 8 bytes");
        }
        short[..name.len()].copy_from_slice(name.as_bytes());
        let va = align(next_va, section_alignment);
        let raw_offset = align(out.len() as u64, file_alignment);
        let raw_size = align(data.len() as u64, file_alignment);
        out.resize(raw_offset as usize, 0);
        out.extend_from_slice(data);
        out.resize((raw_offset + raw_size) as usize, 0);
        headers.push(ImageSectionHeader {
            name: short,
            virtual_size: U32::new(LE, u32::try_from(data.len())?),
            virtual_address: U32::new(LE, u32::try_from(va)?),
            size_of_raw_data: U32::new(LE, u32::try_from(raw_size)?),
            pointer_to_raw_data: U32::new(LE, u32::try_from(raw_offset)?),
            pointer_to_relocations: U32::new(LE, 0),
            pointer_to_linenumbers: U32::new(LE, 0),
            number_of_relocations: U16::new(LE, 0),
            number_of_linenumbers: U16::new(LE, 0),
            characteristics: U32::new(LE, IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ),
        });
        next_va = va + data.len() as u64;
        added_data += raw_size;
    }

    let start = table_offset + count * size_of::<ImageSectionHeader>();
    for (i, header) in headers.iter().enumerate() {
        let at = start + i * size_of::<ImageSectionHeader>();
        out[at..at + size_of::<ImageSectionHeader>()].copy_from_slice(pod::bytes_of(header));
    }
    let (nt, _) = pod::from_bytes_mut::<ImageNtHeaders64>(&mut out[nt_offset..])
        .map_err(|()| anyhow::anyhow!("the EFI stub's headers are truncated"))?;
    nt.file_header
        .number_of_sections
        .set(LE, u16::try_from(count + sections.len())?);
    let opt = &mut nt.optional_header;
    opt.size_of_image
        .set(LE, u32::try_from(align(next_va, section_alignment))?);
    let initialized = u64::from(opt.size_of_initialized_data.get(LE)) + added_data;
    opt.size_of_initialized_data
        .set(LE, u32::try_from(initialized)?);
    // UEFI firmware does not check the checksum; a stale one would be wrong, zero is "none".
    opt.check_sum.set(LE, 0);
    Ok(out)
}

fn align(value: u64, alignment: u64) -> u64 {
    value.div_ceil(alignment.max(1)) * alignment.max(1)
}

/// The `.osrel` section: who this image is, for boot menus and `bootctl`.
pub fn os_release(emberd_version: &str, kernel_release: &str) -> String {
    format!(
        "ID=ember\nNAME=\"ember worker\"\nVERSION_ID={emberd_version}\n\
         PRETTY_NAME=\"ember worker {emberd_version} (Linux {kernel_release})\"\n"
    )
}
