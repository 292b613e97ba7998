//! `clone3`, for the tests and the bench that need what `fork` cannot do: a chosen pid
//! (`set_tid`), a start inside a cgroup (`CLONE_INTO_CGROUP`).

/// `clone3`'s arguments (linux/sched.h, the version with `cgroup`).
#[repr(C)]
#[derive(Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// The child starts in the cgroup whose directory `cgroup` is an fd of.
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `clone3(args)`: the child's pid in the parent, 0 in the child, negative (errno set) if
/// the kernel refused.
///
/// # Safety
///
/// As `fork`, with `args` asking for no new stack and no `CLONE_VM`: in the child, only
/// async-signal-safe calls on memory prepared before, until `execve` or `_exit`.
pub unsafe fn clone3(args: &CloneArgs) -> i64 {
    libc::syscall(
        libc::SYS_clone3,
        args as *const CloneArgs,
        std::mem::size_of::<CloneArgs>(),
    )
}
