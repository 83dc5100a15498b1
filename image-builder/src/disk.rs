//! The bootable disk: a GPT with one EFI system partition, FAT-formatted, holding the
//! unified kernel image at `\EFI\BOOT\BOOTX64.EFI`, the path UEFI firmware boots from a
//! removable disk with no boot entries (so the image needs no boot loader or NVRAM setup).

use anyhow::{Context, Result};
use gpt::disk::LogicalBlockSize;
use gpt::mbr::ProtectiveMBR;
use gpt::{partition_types, GptConfig};
use std::fs::OpenOptions;
use std::io::{Cursor, Seek, SeekFrom, Write};
use std::path::Path;

const SECTOR: u64 = 512;
const MIB: u64 = 1024 * 1024;
/// Where the partition starts, and room for the backup GPT at the end.
const ALIGNMENT: u64 = MIB;
/// The path of the UKI in the ESP.
pub const BOOT_PATH: &str = "EFI/BOOT/BOOTX64.EFI";

/// Writes the disk image to `out`.
pub fn write(out: &Path, uki: &[u8]) -> Result<()> {
    let esp = esp(uki)?;
    let total = ALIGNMENT + esp.len() as u64 + ALIGNMENT;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    file.set_len(total)?;
    ProtectiveMBR::with_lb_size(u32::try_from(total / SECTOR - 1).unwrap_or(u32::MAX))
        .overwrite_lba0(&mut file)
        .context("writing the protective MBR")?;
    let mut disk = GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .create_from_device(file, None)
        .context("creating the GPT")?;
    let id = disk
        .add_partition(
            "EFI system partition",
            esp.len() as u64,
            partition_types::EFI,
            0,
            Some(ALIGNMENT / SECTOR),
        )
        .context("adding the EFI system partition")?;
    let first_lba = disk.partitions()[&id].first_lba;
    let mut file = disk.write().context("writing the GPT")?;
    file.seek(SeekFrom::Start(first_lba * SECTOR))?;
    file.write_all(&esp)?;
    file.sync_all()?;
    Ok(())
}

/// The ESP's FAT file system, sized for the UKI with some room, in whole MiB.
fn esp(uki: &[u8]) -> Result<Vec<u8>> {
    let size = (uki.len() as u64 + uki.len() as u64 / 8 + 4 * MIB).div_ceil(MIB) * MIB;
    let mut volume = Cursor::new(vec![0u8; size as usize]);
    fatfs::format_volume(
        &mut volume,
        fatfs::FormatVolumeOptions::new().volume_label(*b"EMBER-ESP  "),
    )
    .context("formatting the EFI system partition")?;
    {
        let fs = fatfs::FileSystem::new(&mut volume, fatfs::FsOptions::new())?;
        {
            let root = fs.root_dir();
            root.create_dir("EFI")?.create_dir("BOOT")?;
            let mut file = root.create_file(BOOT_PATH)?;
            file.truncate()?;
            file.write_all(uki)?;
            file.flush()?;
        }
        fs.unmount()?;
    }
    Ok(volume.into_inner())
}
