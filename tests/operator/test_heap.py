"""kube/heap.py: the heap's free pages go back to the system (the resync calls it: after a LIST
of thousands of runs the operator's RSS otherwise keeps what the parse freed). Measured in a
fresh interpreter, where the main thread's heap holds only what the probe allocates."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json
from sheepdog.kube.heap import release_free_memory

def rss_mib():
    return int([l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]) // 1024

blocks = [bytes(1000) + bytes([i % 256]) for i in range(200_000)]  # ~200 MiB of malloc chunks
pin = bytes(1000) + b"pin"  # allocated after them: the heap's top stays in use, nothing shrinks by itself
del blocks
freed = rss_mib()
released = release_free_memory()
print(json.dumps({"freed": freed, "trimmed": rss_mib(), "released": released, "pin": len(pin)}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_freed_memory_leaves_the_process_after_release():
    out = json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                                    check=True, timeout=120).stdout)
    assert out["released"] is True
    assert out["freed"] > 150, out  # freed, yet still resident
    assert out["trimmed"] < out["freed"] - 150, out  # given back
