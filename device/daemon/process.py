"""The process keeps what it holds in memory: no core dump, no debugger, no swap.

At start the daemon makes itself undumpable (no core file, no ptrace by other
users' processes, /proc/<pid>/mem closed to them), sets its core limit to zero,
locks its memory where the service is permitted to (and says so where it is not),
and refuses to run while swap is on unless the config allows it: a frame buffer
paged out to a swap partition is a palm print on disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import resource
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from device.errors import ScannerError

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
MCL_CURRENT, MCL_FUTURE = 1, 2


class SwapError(ScannerError, RuntimeError):
    """Swap is on and the config does not allow it (exit 78, a configuration problem)."""

    exit_code = 78


@dataclass(frozen=True)
class Hardening:
    dumpable: bool
    core_limit: int
    memory_locked: bool
    lock_error: str | None
    swap_devices: list[str]

    def describe(self) -> str:
        lock = "memory locked" if self.memory_locked else f"memory NOT locked ({self.lock_error})"
        swap = "swap off" if not self.swap_devices else "swap ON: " + ", ".join(self.swap_devices)
        return (
            f"process: {'dumpable' if self.dumpable else 'not dumpable'}, core limit {self.core_limit}, "
            f"{lock}, {swap}"
        )


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    # By its soname: find_library would run ldconfig or a compiler in a child process.
    return ctypes.CDLL("libc.so.6", use_errno=True)


def dumpable() -> bool:
    return bool(_libc().prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))


def swap_devices(proc_swaps: Path = Path("/proc/swaps")) -> list[str]:
    """Active swap areas, from /proc/swaps (a header line, then one line per area)."""
    try:
        lines = proc_swaps.read_text().splitlines()
    except OSError:
        return []
    return [line.split()[0] for line in lines[1:] if line.strip()]


def lock_memory() -> tuple[bool, str | None]:
    """mlockall, current and future pages; (False, why) where not permitted."""
    libc = _libc()
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE) == 0:
        return True, None
    err = ctypes.get_errno()
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    limit = "unlimited" if soft == resource.RLIM_INFINITY else f"{soft // 1024} KiB"
    return False, f"{errno.errorcode.get(err, err)}: {os.strerror(err)}; RLIMIT_MEMLOCK {limit}"


def map_large_buffers(threshold: int = 128 * 1024) -> bool:
    """Frame-sized allocations get their own pages, returned to the kernel when freed.

    glibc otherwise raises its mmap threshold as buffers are freed and serves later
    frames from a heap that only grows: resident memory creeps up scan after scan, and
    freed frame memory lingers in the process. A fixed threshold keeps memory flat.
    """
    libc = _libc()
    # Few heaps: every thread (checks, uplink, status) would otherwise get its own arena,
    # each holding freed memory of its own.
    return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold)) and bool(libc.mallopt(M_ARENA_MAX, 2))


def trim_heap() -> None:
    """Give the heap's free pages back to the kernel (glibc's malloc_trim), after each scan:
    what a scan allocated and freed in small pieces does not stay resident."""
    with contextlib.suppress(AttributeError):  # a libc without it (musl): nothing to do
        _libc().malloc_trim(0)


def harden(*, allow_swap: bool, lock: bool = True, proc_swaps: Path = Path("/proc/swaps")) -> Hardening:
    """Apply everything above; raises SwapError (exit 78) when swap is on and not allowed."""
    swaps = swap_devices(proc_swaps)
    if swaps and not allow_swap:
        raise SwapError(
            f"swap is on ({', '.join(swaps)}): frame buffers could be paged to disk. "
            "Turn swap off (sudo dphys-swapfile swapoff && sudo systemctl disable dphys-swapfile, "
            "or swapoff -a) or set [device] allow_swap = true"
        )
    map_large_buffers()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if _libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
    locked, why = lock_memory() if lock else (False, "not asked to")
    return Hardening(
        dumpable=dumpable(),
        core_limit=resource.getrlimit(resource.RLIMIT_CORE)[1],
        memory_locked=locked,
        lock_error=why,
        swap_devices=swaps,
    )
