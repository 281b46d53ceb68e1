// SPDX-License-Identifier: Apache-2.0
//! Recognising and loading the guest kernel and its initramfs.
//!
//! The format is decided from the file's content, never its name: an ELF header means an
//! uncompressed vmlinux, the `HdrS` magic of the x86 boot protocol means a bzImage. Anything
//! else, or a bzImage shorter than its own header says, is refused before the VM is built.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::HIMEM_START;

/// Offset of the setup header in a bzImage (Documentation/arch/x86/boot.rst).
const SETUP_HEADER_OFFSET: u64 = 0x1f1;
/// Offset of the `HdrS` magic.
const HDRS_OFFSET: usize = 0x202;
const HDRS_MAGIC: &[u8; 4] = b"HdrS";
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// Boot protocol 2.06 is the first with `cmdline_size`, 2.12 the first with `xloadflags`.
const PROTOCOL_CMDLINE_SIZE: u16 = 0x0206;
const PROTOCOL_XLOADFLAGS: u16 = 0x020c;
/// xloadflags bit 0: the kernel has a 64-bit entry point at offset 0x200.
const XLF_KERNEL_64: u16 = 1 << 0;
/// Offset of the 64-bit entry point from the start of the protected-mode kernel.
const BZIMAGE_ENTRY_64_OFFSET: u64 = 0x200;
/// The x86 COMMAND_LINE_SIZE, for kernels whose header does not give `cmdline_size`.
const MAX_CMDLINE_LEN_U32: u32 = 2048;

/// Errors recognising or loading the kernel and initramfs.
#[derive(Debug, Error)]
pub enum KernelError {
    /// The kernel file could not be opened or read.
    #[error("cannot read kernel {0}")]
    Open(PathBuf, #[source] std::io::Error),
    /// The kernel file is empty.
    #[error("kernel {0} is an empty file")]
    Empty(PathBuf),
    /// Neither format was recognised.
    #[error(
        "kernel {0} is not a Linux kernel: neither an ELF vmlinux (no ELF magic) nor a bzImage \
         (no 'HdrS' magic at offset 0x202)"
    )]
    UnknownFormat(PathBuf),
    /// A bzImage whose header asks for more bytes than the file has.
    #[error(
        "kernel {path} is a truncated bzImage: its header describes {expected} bytes, the \
         file has {actual}"
    )]
    Truncated {
        /// The kernel file.
        path: PathBuf,
        /// Bytes the setup header accounts for.
        expected: u64,
        /// Bytes in the file.
        actual: u64,
    },
    /// A bzImage with no 64-bit entry point (32-bit kernel or protocol before 2.12).
    #[error("kernel {0} is a bzImage without a 64-bit entry point; build it for x86-64")]
    No64BitEntry(PathBuf),
    /// linux-loader refused the image.
    #[error("cannot load {format} kernel {path}")]
    Load {
        /// The detected format.
        format: KernelFormat,
        /// The kernel file.
        path: PathBuf,
        /// What linux-loader said.
        #[source]
        source: linux_loader::loader::Error,
    },
    /// The initramfs could not be opened or read.
    #[error("cannot read initramfs {0}")]
    InitramfsOpen(PathBuf, #[source] std::io::Error),
    /// The initramfs does not fit in guest memory below the kernel's limit.
    #[error(
        "initramfs {path} ({size} bytes) does not fit in guest memory between the kernel end \
         ({kernel_end:#x}) and {limit:#x}; give the guest more --memory"
    )]
    InitramfsTooBig {
        /// The initramfs file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// End of the loaded kernel.
        kernel_end: u64,
        /// Highest address the initramfs may end at.
        limit: u64,
    },
    /// Copying the initramfs into guest memory failed.
    #[error("cannot copy initramfs {0} into guest memory")]
    InitramfsLoad(PathBuf, #[source] vm_memory::GuestMemoryError),
    /// The command line is longer than the kernel accepts.
    #[error("--cmdline is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong {
        /// Length of the command line.
        len: usize,
        /// The kernel's `cmdline_size`.
        max: u32,
    },
}

/// The kernel image formats the VMM boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// A compressed kernel with the x86 boot protocol's setup header.
    BzImage,
    /// An uncompressed ELF vmlinux, entered at its ELF entry point.
    Elf,
}

impl std::fmt::Display for KernelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KernelFormat::BzImage => "bzImage",
            KernelFormat::Elf => "ELF vmlinux",
        })
    }
}

/// A kernel file whose format has been recognised and checked.
pub struct KernelImage {
    path: PathBuf,
    file: File,
    format: KernelFormat,
    header: Option<setup_header>,
}

/// Where the loaded kernel is and how to enter it.
pub struct LoadedKernel {
    /// 64-bit entry point.
    pub entry: GuestAddress,
    /// First byte after the kernel image.
    pub end: u64,
    /// The bzImage setup header, to copy into the zero page.
    pub header: Option<setup_header>,
}

impl KernelImage {
    /// Opens `path` and recognises its format.
    pub fn open(path: &Path) -> Result<Self, KernelError> {
        let open_err = |e| KernelError::Open(path.to_path_buf(), e);
        let mut file = File::open(path).map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        if len == 0 {
            return Err(KernelError::Empty(path.to_path_buf()));
        }

        let mut head = vec![0u8; 0x400.min(usize::try_from(len).unwrap_or(usize::MAX))];
        file.read_exact(&mut head).map_err(open_err)?;
        let format = detect_format(&head).ok_or(KernelError::UnknownFormat(path.into()))?;

        let header = match format {
            KernelFormat::BzImage => Some(check_bzimage(path, &mut file, len)?),
            KernelFormat::Elf => None,
        };
        Ok(KernelImage {
            path: path.to_path_buf(),
            file,
            format,
            header,
        })
    }

    /// Returns the detected format.
    pub fn format(&self) -> KernelFormat {
        self.format
    }

    /// Checks that `cmdline` fits what this kernel accepts.
    pub fn check_cmdline(&self, cmdline: &str) -> Result<(), KernelError> {
        let max = self
            .header
            .filter(|h| h.version >= PROTOCOL_CMDLINE_SIZE)
            .map_or(MAX_CMDLINE_LEN_U32 - 1, |h| h.cmdline_size);

        if cmdline.len() > max as usize {
            return Err(KernelError::CmdlineTooLong {
                len: cmdline.len(),
                max,
            });
        }
        Ok(())
    }

    /// Loads the kernel into `mem`.
    pub fn load(mut self, mem: &GuestMemoryMmap) -> Result<LoadedKernel, KernelError> {
        let load_err = |source| KernelError::Load {
            format: self.format,
            path: self.path.clone(),
            source,
        };

        match self.format {
            KernelFormat::BzImage => {
                let result = BzImage::load(mem, Some(HIMEM_START), &mut self.file, None)
                    .map_err(load_err)?;
                Ok(LoadedKernel {
                    entry: GuestAddress(result.kernel_load.0 + BZIMAGE_ENTRY_64_OFFSET),
                    end: result.kernel_end,
                    header: result.setup_header,
                })
            }
            KernelFormat::Elf => {
                let result =
                    Elf::load(mem, None, &mut self.file, Some(HIMEM_START)).map_err(load_err)?;
                Ok(LoadedKernel {
                    entry: result.kernel_load,
                    end: result.kernel_end,
                    header: None,
                })
            }
        }
    }
}

/// Tells the format from the first bytes of the file.
pub fn detect_format(head: &[u8]) -> Option<KernelFormat> {
    if head.starts_with(ELF_MAGIC) {
        return Some(KernelFormat::Elf);
    }
    if head.get(HDRS_OFFSET..HDRS_OFFSET + 4) == Some(HDRS_MAGIC) {
        return Some(KernelFormat::BzImage);
    }
    None
}

/// Reads the setup header and checks that the file holds all it describes and that the
/// kernel can be entered in 64-bit mode.
fn check_bzimage(path: &Path, file: &mut File, len: u64) -> Result<setup_header, KernelError> {
    let open_err = |e| KernelError::Open(path.to_path_buf(), e);
    let mut header = setup_header::default();
    file.seek(SeekFrom::Start(SETUP_HEADER_OFFSET))
        .map_err(open_err)?;
    // SAFETY: setup_header is a plain-old-data struct of integers; any bytes are valid.
    let raw = unsafe {
        std::slice::from_raw_parts_mut(
            (&mut header as *mut setup_header).cast::<u8>(),
            std::mem::size_of::<setup_header>(),
        )
    };
    let got = file.read(raw).map_err(open_err)?;

    let setup_sects = match header.setup_sects {
        0 => 4,
        n => u64::from(n),
    };
    let expected = (setup_sects + 1) * 512 + u64::from(header.syssize) * 16;
    if len < expected || got < raw.len() {
        return Err(KernelError::Truncated {
            path: path.into(),
            expected,
            actual: len,
        });
    }

    if header.version < PROTOCOL_XLOADFLAGS || header.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(KernelError::No64BitEntry(path.into()));
    }
    Ok(header)
}

/// Loads the initramfs at the highest page-aligned address below `limit` that clears the
/// kernel, and returns (address, size).
pub fn load_initramfs(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
    limit: u64,
) -> Result<(GuestAddress, u64), KernelError> {
    let open_err = |e| KernelError::InitramfsOpen(path.to_path_buf(), e);
    let mut file = File::open(path).map_err(open_err)?;
    let size = file.metadata().map_err(open_err)?.len();

    let too_big = || KernelError::InitramfsTooBig {
        path: path.into(),
        size,
        kernel_end,
        limit,
    };
    let start = limit.checked_sub(size).ok_or_else(too_big)? & !0xfff;
    if start < kernel_end {
        return Err(too_big());
    }

    let len = usize::try_from(size).map_err(|_| too_big())?;
    mem.read_exact_volatile_from(GuestAddress(start), &mut file, len)
        .map_err(|e| KernelError::InitramfsLoad(path.into(), e))?;
    Ok((GuestAddress(start), size))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vmm-kernel-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        File::create(&path).unwrap().write_all(bytes).unwrap();
        path
    }

    /// A minimal bzImage: a setup header saying `setup_sects` and `syssize`, padded to `len`.
    fn fake_bzimage(setup_sects: u8, syssize: u32, xloadflags: u16, len: usize) -> Vec<u8> {
        let mut image = vec![0u8; len.max(0x270)];
        image[0x1f1] = setup_sects;
        image[0x1f4..0x1f8].copy_from_slice(&syssize.to_le_bytes());
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        image[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        image[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
        image.truncate(len.max(0x270));
        image
    }

    #[test]
    fn format_comes_from_content() {
        assert_eq!(
            detect_format(b"\x7fELF\x02\x01\x01"),
            Some(KernelFormat::Elf)
        );
        assert_eq!(
            detect_format(&fake_bzimage(1, 1, 1, 0x400)),
            Some(KernelFormat::BzImage)
        );
        assert_eq!(detect_format(b"\x1f\x8b\x08\x00"), None);
        assert_eq!(detect_format(&[]), None);
    }

    #[test]
    fn a_complete_bzimage_is_accepted_whatever_its_name() {
        let image = fake_bzimage(1, 4, XLF_KERNEL_64, 1024 + 64);
        let kernel = KernelImage::open(&temp_file("vmlinux", &image)).unwrap();
        assert_eq!(kernel.format(), KernelFormat::BzImage);
        assert!(kernel.check_cmdline(&"x".repeat(2047)).is_ok());
        let err = kernel.check_cmdline(&"x".repeat(2048)).unwrap_err();
        assert!(err.to_string().contains("at most 2047"), "{err}");
    }

    #[test]
    fn a_truncated_bzimage_is_refused_with_sizes() {
        let image = fake_bzimage(30, 0x10_0000, XLF_KERNEL_64, 4096);
        let err = KernelImage::open(&temp_file("trunc", &image))
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(
            text.contains("truncated bzImage") && text.contains("the file has 4096"),
            "{text}"
        );
    }

    #[test]
    fn a_32_bit_only_bzimage_is_refused() {
        let image = fake_bzimage(1, 4, 0, 1024 + 64);
        let err = KernelImage::open(&temp_file("k32", &image)).err().unwrap();
        assert!(matches!(err, KernelError::No64BitEntry(_)), "{err}");
    }

    #[test]
    fn empty_garbage_and_missing_files_are_refused() {
        let err = KernelImage::open(&temp_file("empty", b"")).err().unwrap();
        assert!(err.to_string().contains("is an empty file"), "{err}");

        let err = KernelImage::open(&temp_file("junk", &[0x55; 4096]))
            .err()
            .unwrap();
        assert!(err.to_string().contains("is not a Linux kernel"), "{err}");

        let err = KernelImage::open(Path::new("/nonexistent/bzImage"))
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("cannot read kernel /nonexistent/bzImage"),
            "{err}"
        );
    }

    #[test]
    fn initramfs_goes_high_and_must_clear_the_kernel() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let path = temp_file("initrd", &[7u8; 10000]);

        let (addr, size) = load_initramfs(&mem, &path, 0x20_0000, 16 << 20).unwrap();
        assert_eq!(size, 10000);
        assert_eq!(addr.0, ((16 << 20) - 10000) & !0xfff);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(addr.0 + 9999)).unwrap(), 7);

        let err = load_initramfs(&mem, &path, (16 << 20) - 4096, 16 << 20).unwrap_err();
        assert!(
            err.to_string().contains("give the guest more --memory"),
            "{err}"
        );
    }
}
