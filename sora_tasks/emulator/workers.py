"""Render worker processes that never outlive the emulator, however it ends."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from multiprocessing.process import BaseProcess

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
ORPHAN_POLL_SECONDS = 0.5


def watch_parent(parent_pid: int) -> None:
    """ProcessPoolExecutor initializer: the worker exits when `parent_pid` does, even by SIGKILL.

    The pool's own shutdown needs a live parent; a killed emulator left its workers
    running (~400 MB each) until they were killed by hand.
    """
    if sys.platform.startswith("linux"):
        set_parent_death_signal(signal.SIGTERM)
    start_orphan_watch(parent_pid)


def set_parent_death_signal(sig: int) -> bool:
    """Have Linux send `sig` to this process when the thread that started it exits."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):  # no prctl here: the orphan watch still covers it
        return False


def start_orphan_watch(parent_pid: int) -> None:
    """Exit once the parent is gone (we get re-parented): the portable fallback to PDEATHSIG."""
    if os.getppid() != parent_pid:  # it died before we got here; PDEATHSIG would not fire
        os._exit(0)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(ORPHAN_POLL_SECONDS)
        # No cleanup: nobody is left to receive a result, and a busy encode must not delay this.
        os._exit(0)

    threading.Thread(target=watch, name="sora-emulator-orphan-watch", daemon=True).start()


def stop_processes(processes: Iterable[BaseProcess], timeout: float = 5.0) -> None:
    """Terminate the processes, wait up to `timeout` seconds, then kill any that remain."""
    alive = [process for process in processes if process.is_alive()]
    for process in alive:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in alive:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(1.0)
