"""A seccomp filter for the code sandbox, as the classic-BPF program `bwrap --seccomp FD` loads.

It denies (EPERM) what a sandboxed candidate has no use for and what would widen its reach: debugging other
processes (ptrace, process_vm_*), device nodes, kernel objects (bpf, keyrings, perf, modules, kexec, io_uring,
userfaultfd), namespaces and mounts, pidfds, System V shared memory and message queues (kernel memory no rlimit
bounds), setting file times (the only change a non-owner can make to the host's device nodes bound into /dev:
their times, to now), leaving bwrap's process group (`setsid`, `setpgid`: the caller kills the group, and its
death reaches the group through a lifeline pipe), and starting processes at all: `clone` only for threads
(CLONE_THREAD, no CLONE_NEW* flag), `fork`/`vfork` refused, `clone3` ENOSYS so libc falls back to `clone`, whose
flags a filter can read. Other architectures' syscall numbers are not listed: there `program()` returns None and the
sandbox runs without it.
"""

from __future__ import annotations

import errno
import platform
import struct

# syscall numbers by machine (`uname -m`): (AUDIT_ARCH_*, {name: number})
_DENIED = ("ptrace process_vm_readv process_vm_writev mknod mknodat bpf keyctl add_key request_key unshare setns "
           "mount umount2 pivot_root chroot open_tree move_mount fsopen fsconfig fsmount fspick mount_setattr "
           "perf_event_open kexec_load kexec_file_load init_module finit_module delete_module pidfd_open "
           "pidfd_send_signal pidfd_getfd userfaultfd io_uring_setup io_uring_enter io_uring_register "
           "name_to_handle_at open_by_handle_at shmget msgget utime utimes futimesat utimensat setsid setpgid fork "
           "vfork").split()
_TABLES = {
    "x86_64": (0xC000003E, dict(
        ptrace=101, process_vm_readv=310, process_vm_writev=311, mknod=133, mknodat=259, bpf=321, keyctl=250,
        add_key=248, request_key=249, unshare=272, setns=308, mount=165, umount2=166, pivot_root=155, chroot=161,
        open_tree=428, move_mount=429, fsopen=430, fsconfig=431, fsmount=432, fspick=433, mount_setattr=442,
        perf_event_open=298, kexec_load=246, kexec_file_load=320, init_module=175, finit_module=313,
        delete_module=176, pidfd_open=434, pidfd_send_signal=424, pidfd_getfd=438, userfaultfd=323,
        io_uring_setup=425, io_uring_enter=426, io_uring_register=427, name_to_handle_at=303,
        open_by_handle_at=304, shmget=29, msgget=68, utime=132, utimes=235, futimesat=261, utimensat=280, setsid=112,
        setpgid=109, fork=57, vfork=58, clone=56, clone3=435)),
    "aarch64": (0xC00000B7, dict(  # the generic table: no mknod, utime, utimes, futimesat, fork or vfork
        ptrace=117, process_vm_readv=270, process_vm_writev=271, mknodat=33, bpf=280, keyctl=219, add_key=217,
        request_key=218, unshare=97, setns=268, mount=40, umount2=39, pivot_root=41, chroot=51, open_tree=428,
        move_mount=429, fsopen=430, fsconfig=431, fsmount=432, fspick=433, mount_setattr=442, perf_event_open=241,
        kexec_load=104, kexec_file_load=294, init_module=105, finit_module=273, delete_module=106, pidfd_open=434,
        pidfd_send_signal=424, pidfd_getfd=438, userfaultfd=282, io_uring_setup=425, io_uring_enter=426,
        io_uring_register=427, name_to_handle_at=264, open_by_handle_at=265, shmget=194, msgget=186, utimensat=88,
        setsid=157, setpgid=154, clone=220, clone3=435)),
}
_X32_BIT = 0x40000000  # x86_64's x32 ABI: the same calls under other numbers
_CLONE_THREAD = 0x00010000
_CLONE_NEW = 0x00000080 | 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

# classic BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h)
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_KILL, _ALLOW, _ERRNO = 0x80000000, 0x7FFF0000, 0x00050000
_NR, _ARCH, _ARG0 = 0, 4, 16  # offsets in struct seccomp_data (the low half of args[0], little-endian)


def supported() -> bool:
    """Whether this machine's syscall numbers are known."""
    return platform.machine() in _TABLES


def program() -> bytes | None:
    """The filter's instructions (struct sock_filter, native byte order), or None on an unknown architecture."""
    if not supported():
        return None
    arch, nr = _TABLES[platform.machine()]
    deny = _ERRNO | errno.EPERM
    ops = [(_LD_ABS, 0, 0, _ARCH), (_JEQ, 1, 0, arch), (_RET, 0, 0, _KILL), (_LD_ABS, 0, 0, _NR)]
    if arch == _TABLES["x86_64"][0]:
        ops += [(_JGE, 0, 1, _X32_BIT), (_RET, 0, 0, deny)]
    for name in _DENIED:
        if name in nr:
            ops += [(_JEQ, 0, 1, nr[name]), (_RET, 0, 0, deny)]
    ops += [(_JEQ, 0, 1, nr["clone3"]), (_RET, 0, 0, _ERRNO | errno.ENOSYS),
            (_JEQ, 1, 0, nr["clone"]), (_RET, 0, 0, _ALLOW),
            (_LD_ABS, 0, 0, _ARG0), (_JSET, 0, 1, _CLONE_NEW), (_RET, 0, 0, deny),
            (_JSET, 0, 1, _CLONE_THREAD), (_RET, 0, 0, _ALLOW), (_RET, 0, 0, deny)]
    return b"".join(struct.pack("=HBBI", *op) for op in ops)
