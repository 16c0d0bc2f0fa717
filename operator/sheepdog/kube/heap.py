"""Giving freed heap memory back to the system after the resync.

The operator's large transient allocations (a resync's LIST of thousands of runs parsed into
dicts, the pydantic models a reconcile builds from them, in 16 worker threads) are freed when
done, but glibc keeps freed memory inside its heaps and per-thread arenas: with 2000 finished
runs the operator's RSS crept up by about 20 MiB a resync while the Python objects it held
stayed the same (docs/benchmarks.md). malloc_trim(0) returns every free page of every arena
to the system. Elsewhere (musl, macOS: no malloc_trim) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any, Optional

_libc: Optional[Any] = None
_looked = False


def _trim_function() -> Optional[Any]:
    global _libc, _looked
    if not _looked:
        _looked = True
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc = libc if hasattr(libc, "malloc_trim") else None
        except OSError:
            _libc = None
    return _libc


def release_free_memory() -> bool:
    """Return the heap's free pages to the system; False where the C library cannot."""
    libc = _trim_function()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
