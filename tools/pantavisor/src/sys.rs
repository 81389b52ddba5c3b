//! The daemon's unsafe edge: raw syscalls and ioctls, each with why it is
//! sound. Everything else in the daemon is safe Rust.

use std::os::fd::{AsRawFd, BorrowedFd};

/// Orphaned container inits (their parent, the runtime's intermediate
/// process, exits) come back to us to be reaped.
pub fn become_subreaper() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Give the C library's freed heap back to the kernel (PID 1 stays resident).
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Restore SIGPIPE's default action (Rust sets it to ignore), for a child
/// about to exec, or a CLI whose output may be a closed pipe.
pub fn default_sigpipe() {
    // SAFETY: SIG_DFL is not a handler function: no Rust code runs at
    // signal time, so nothing can observe a half-updated state.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
}

/// reboot(2) with LINUX_REBOOT_CMD_RESTART2 and an argument (the Raspberry
/// Pi firmware's `0 tryboot`); returns only if the kernel refused.
pub fn restart2(arg: &str) {
    let Ok(c) = std::ffi::CString::new(arg) else {
        return;
    };
    // SAFETY: the magic numbers are the kernel's; `c` is a NUL-terminated
    // string that outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_reboot,
            libc::LINUX_REBOOT_MAGIC1,
            libc::LINUX_REBOOT_MAGIC2,
            libc::LINUX_REBOOT_CMD_RESTART2,
            c.as_ptr(),
        );
    }
}

/// An ioctl without argument (or with an integer one); its result.
pub fn ioctl_int(fd: BorrowedFd, request: libc::c_ulong, arg: libc::c_ulong) -> libc::c_int {
    // SAFETY: the callers pass requests whose argument is an integer
    // (LOOP_CTL_GET_FREE, LOOP_SET_FD, LOOP_CLR_FD), never a pointer.
    unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) }
}

pub const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
pub const LOOP_SET_FD: libc::c_ulong = 0x4C00;
pub const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
pub const LO_FLAGS_READ_ONLY: u32 = 1;
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// The kernel's `struct loop_info64`.
#[repr(C)]
pub struct LoopInfo64 {
    pub lo_device: u64,
    pub lo_inode: u64,
    pub lo_rdevice: u64,
    pub lo_offset: u64,
    pub lo_sizelimit: u64,
    pub lo_number: u32,
    pub lo_encrypt_type: u32,
    pub lo_encrypt_key_size: u32,
    pub lo_flags: u32,
    pub lo_file_name: [u8; 64],
    pub lo_crypt_name: [u8; 64],
    pub lo_encrypt_key: [u8; 32],
    pub lo_init: [u64; 2],
}

impl Default for LoopInfo64 {
    fn default() -> Self {
        LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        }
    }
}

/// LOOP_SET_STATUS64 on a loop device; the ioctl's result.
pub fn loop_set_status(fd: BorrowedFd, info: &LoopInfo64) -> libc::c_int {
    // SAFETY: LOOP_SET_STATUS64 reads one struct loop_info64 through the
    // pointer, which LoopInfo64 mirrors (repr(C)) and which outlives the call.
    unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            LOOP_SET_STATUS64 as _,
            info as *const LoopInfo64,
        )
    }
}

/// Size of the kernel's `struct dm_ioctl` (linux/dm-ioctl.h), the header of
/// every device-mapper request.
pub const DM_IOCTL_SIZE: usize = 312;

/// A device-mapper ioctl (`_IOWR(0xfd, cmd, struct dm_ioctl)`) on the
/// control device with the request in `buf`: a `struct dm_ioctl` (its
/// `data_size` no larger than `buf`) and what follows it; the kernel writes
/// its answer back into `buf`. The ioctl's result.
pub fn dm_ioctl(fd: BorrowedFd, cmd: u8, buf: &mut [u64]) -> libc::c_int {
    let request: libc::c_ulong =
        (3 << 30) | ((DM_IOCTL_SIZE as libc::c_ulong) << 16) | (0xfd << 8) | cmd as libc::c_ulong;
    // The kernel reads and writes data_size bytes (the u32 at offset 12):
    // never more than the buffer holds.
    let bytes = buf.len() * 8;
    let data_size = {
        let head = buf.get(1).copied().unwrap_or(0);
        // Offset 12 is the upper half of the second u64 (native endianness).
        let b = head.to_ne_bytes();
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]) as usize
    };
    if bytes < DM_IOCTL_SIZE || data_size > bytes || data_size < DM_IOCTL_SIZE {
        return -1;
    }
    // SAFETY: `buf` is 8-byte aligned, at least DM_IOCTL_SIZE bytes and at
    // least the data_size the header declares, which bounds what the kernel
    // reads and writes; it outlives the call.
    unsafe { libc::ioctl(fd.as_raw_fd(), request as _, buf.as_mut_ptr()) }
}

/// WDIOC_SETTIMEOUT (`_IOWR('W', 6, int)`): set a watchdog's timeout in
/// seconds; the driver writes back the one it set. The ioctl's result.
pub fn watchdog_set_timeout(fd: BorrowedFd, seconds: &mut libc::c_int) -> libc::c_int {
    const WDIOC_SETTIMEOUT: libc::c_ulong = 0xC004_5706;
    // SAFETY: WDIOC_SETTIMEOUT reads and writes one int through the
    // pointer, which points at a live c_int for the call.
    unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            WDIOC_SETTIMEOUT as _,
            seconds as *mut libc::c_int,
        )
    }
}
