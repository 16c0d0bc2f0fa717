"""Prints, at the end of a `pytest -n 4 --dist loadgroup` run, the seconds each lane's tests
took (setup, call and teardown summed), so the lanes of tests/conftest.py can be balanced
from any run's log, CI's included, instead of from the 30 slowest durations alone."""

from __future__ import annotations

from collections import defaultdict

import pytest

_UNGROUPED = "(unit tests, any worker)"


def lane_of(nodeid: str) -> str:
    """xdist's loadgroup appends '@<group>' to a grouped test's node id."""
    _, sep, group = nodeid.rpartition("@")
    if sep and not any(c in group for c in ("/", ":", "[", "]")):
        return group
    return _UNGROUPED


class LaneTimes:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.tests: dict[str, int] = defaultdict(int)

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report) -> None:
        lane = lane_of(report.nodeid)
        self.seconds[lane] += report.duration
        if report.when == "call":
            self.tests[lane] += 1

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.seconds:
            return
        terminalreporter.write_sep("=", "seconds per lane (tests/conftest.py MODEL_LANES)")
        for lane, secs in sorted(self.seconds.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"{secs:8.0f} s  {self.tests[lane]:5d} tests  {lane}")


def pytest_configure(config) -> None:
    # Only where the reports arrive: the controller of an xdist run, or a run without xdist.
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(LaneTimes(), "sheepdog-lane-times")
