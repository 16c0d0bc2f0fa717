"""sheepdog.kube.sweeps.resync_forever without the SelfAlignmentSweep CRD (no cluster)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

from sheepdog.kube.client import NotFound
from sheepdog.kube.sweeps import resync_forever


class _Dispatcher:
    def __init__(self) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(1)
        self.triggered: list[tuple[str, str]] = []

    def leading(self) -> bool:
        return True

    async def trigger(self, namespace: str, name: str, why: str = "") -> None:
        self.triggered.append((namespace, name))


class _Reconciler:
    """404 (the CRD is not installed) for the first rounds, then one unsettled sweep."""

    def __init__(self, missing_rounds: int) -> None:
        self.rounds = 0
        self.missing_rounds = missing_rounds

    def list_sweeps(self, namespace):
        self.rounds += 1
        if self.rounds <= self.missing_rounds:
            raise NotFound("the server could not find the requested resource")
        return [{"metadata": {"namespace": "ns", "name": "s", "generation": 1}, "status": {}}]


def test_a_missing_sweep_crd_is_said_once_and_sweeps_are_served_once_it_exists(caplog):
    dispatcher, reconciler = _Dispatcher(), _Reconciler(missing_rounds=4)

    async def main() -> None:
        task = asyncio.create_task(resync_forever(dispatcher, reconciler, ["ns"], 0.01))
        for _ in range(500):
            await asyncio.sleep(0.01)
            if dispatcher.triggered:
                break
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    with caplog.at_level(logging.INFO, logger="sheepdog"):
        asyncio.run(main())
    said = [r for r in caplog.records if "SelfAlignmentSweep CRD is not installed" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a missing CRD"
    assert reconciler.rounds > 4 and dispatcher.triggered[0] == ("ns", "s")
