"""Keeping the engine fed between units of generation (synthesize's blocks and chunks).

One engine call per unit leaves a GPU idle at every unit's end: as the unit drains, its last
long requests run in a batch that shrinks to a handful of sequences, and the next unit's
requests wait until the last one finished. With vLLM the next unit is submitted before the
current one is collected (Engine.submit / collect), so its requests take the slots the
draining unit frees; units are still finished, and written, one at a time in the order they
were taken. With per-request seeds a sample does not depend on its batch, so the files are
the same bytes as one unit at a time (synthesis.seedScope: request, the default).

``feed`` is the loop, pure of any engine or file: the callers say which unit comes next, how
to submit and finish one, when the work is complete and how to wait for other workers.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Optional, TypeVar

H = TypeVar("H")

# Units in the engine at once: the one draining and the next (more would hold claims other
# shards could take, and a KV cache full of queued requests gains nothing).
DEPTH = 2


def feed(pick: Callable[[int], Optional[int]], submit: Callable[[int], H], finish: Callable[[int, H], None],
         complete: Callable[[], bool], wait: Callable[[], None],
         cancel: Callable[[int, H], None] = lambda n, h: None, depth: int = DEPTH) -> None:
    """Run units until ``complete()``: keep up to ``depth`` submitted (``pick(in_flight)`` names
    the next unit to take, or None), finish the oldest, and ``wait()`` when nothing is in
    flight and nothing can be taken (other workers hold the rest). Units still in flight once
    the work is complete are cancelled (synthesize's phase A: enough instructions already)."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    inflight: deque[tuple[int, H]] = deque()  # submitted, unfinished, in the order taken
    while True:
        if complete():
            for n, h in inflight:
                cancel(n, h)
            return
        while len(inflight) < depth:
            n = pick(len(inflight))
            if n is None:
                break
            inflight.append((n, submit(n)))
        if inflight:
            n, h = inflight.popleft()
            finish(n, h)
        else:
            wait()
