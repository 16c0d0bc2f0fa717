"""A simulated executor for planner tests: stage executions as observations, no I/O.

`Simulation.step()` is one reconcile: plan on the current observations, keep the plan's status
(as an executor writes it), then let the world move: a stage that was asked to start shows up
running, and a running stage finishes (with `outcome(iteration, stage)` deciding how).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from sheepdog.api.spec import RunSpec
from sheepdog.api.status import RunStatus
from sheepdog.planner import Event, Plan, StageObservation, StartStage, plan
from sheepdog.stage_config import Layout

LAYOUT = Layout(root="/data", run_dir="/data/runs/demo")
RUN = "demo"


def make_spec(**overrides: Any) -> RunSpec:
    data: dict[str, Any] = {"model": {"base": "models/base"}, "iterations": 3}
    for key, value in overrides.items():
        data[key] = value
    return RunSpec.model_validate(data)


def summary_for(config_iteration: int, stage: str, metrics: Optional[dict[int, float]] = None) -> dict[str, Any]:
    i = config_iteration
    base = {"stage": stage, "iteration": i, "ok": True, "skipped": False, "seconds": 1.0}
    if stage == "synthesize":
        return base | {"generated": 100 * i, "assessed": 90 * i, "parseFailures": i,
                       "meanQuality": 7.0 + i / 10, "meanFollowing": 6.0 + i / 10}
    if stage == "curate":
        return base | {"kept": 50 * i, "keepRate": 0.5, "dropped": {"score": 40 * i}}
    if stage == "train":
        return base | {"trainLoss": 2.0 / i, "evalLoss": 2.1 / i, "samples": 50 * i,
                       "model": f"{LAYOUT.run_dir}/i{i}/model"}
    return base | {"evaluation": {"ifeval-smoke.promptStrict": (metrics or {}).get(i, 0.1 * i)}}


Outcome = Callable[[int, str], tuple[str, Optional[dict], str]]  # (state, summary, message)


@dataclass
class Simulation:
    spec: RunSpec
    metrics: Optional[dict[int, float]] = None
    outcome: Optional[Outcome] = None
    status: Optional[RunStatus] = None
    observed: dict[tuple[int, str], StageObservation] = field(default_factory=dict)
    started: list[StartStage] = field(default_factory=list)  # every StartStage ever returned
    executed: list[tuple[int, str]] = field(default_factory=list)  # executions actually created
    events: list[Event] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)
    clock: int = 0
    generation: int = 1

    def now(self) -> str:
        return f"2026-01-01T00:{self.clock // 60:02d}:{self.clock % 60:02d}Z"

    def plan_once(self) -> Plan:
        self.clock += 1
        p = plan(RUN, self.spec, self.status, list(self.observed.values()), LAYOUT, self.now(), self.generation)
        self.status = p.status
        self.events += p.events
        self.plans.append(p)
        return p

    def step(self) -> Plan:
        p = self.plan_once()
        # the world moves: running stages finish, requested stages appear (idempotent by key)
        for key, obs in list(self.observed.items()):
            if obs.state == "running":
                state, summary, message = self._outcome(*key)
                self.observed[key] = StageObservation(
                    obs.iteration, obs.stage, state, attempts=obs.attempts, summary=summary,
                    message=message, started_at=obs.started_at, finished_at=self.now())
        for action in p.actions:
            self.started.append(action)
            if (action.iteration, action.stage) not in self.observed:
                self.executed.append((action.iteration, action.stage))
                self.observed[(action.iteration, action.stage)] = StageObservation(
                    action.iteration, action.stage, "running", attempts=1, started_at=self.now())
        return p

    def run(self, max_steps: int = 200) -> Plan:
        for _ in range(max_steps):
            p = self.step()
            if p.done or p.status.phase == "Suspended":
                return p
        raise AssertionError("the run did not finish")

    def _outcome(self, iteration: int, stage: str) -> tuple[str, Optional[dict], str]:
        if self.outcome is not None:
            return self.outcome(iteration, stage)
        return "succeeded", summary_for(iteration, stage, self.metrics), ""

    def configs(self, stage: str) -> dict[int, Any]:
        """The config each iteration's `stage` was first started with."""
        out: dict[int, Any] = {}
        for action in self.started:
            if action.stage == stage:
                out.setdefault(action.iteration, action.config)
        return out

    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]
