"""The contract between the control plane and the stage programs.

Both executors (local subprocesses, Kubernetes Jobs) run exactly the command that
`stage_command` returns; only the storage root differs (a local directory, or the PVC
mounted at /data). The stage program reads everything it needs from the config: no
other channel exists, so the config (a Job's ConfigMap in a cluster, the command line locally)
is a complete record of what it did.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from sheepdog.api.spec import RunSpec, Stage

VOLUME_MOUNT = "/data"
TERMINATION_LOG = "/dev/termination-log"
# The stage command's exit code for an error no retry can fix (its config, its seeds, the
# model's chat template): a Job's podFailurePolicy fails the Job at once on it (FailJob) instead
# of spending its retries (sheepdog_jobs.constants.EXIT_UNFIXABLE says the same).
EXIT_UNFIXABLE = 3


class Shard(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: Optional[int] = Field(
        None, description="None: take it from JOB_COMPLETION_INDEX (Indexed Job) or 0."
    )
    count: int = 1


class StageConfig(BaseModel):
    """Everything one stage execution needs. Paths are absolute inside the executor's view."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    run: str
    iteration: int
    stage: Stage
    spec: RunSpec
    root: str = Field(description="Volume root: relative model/seed paths resolve against it.")
    run_dir: str = Field(description="This run's directory (absolute).")
    out_dir: str = Field(description="This stage's output directory: <runDir>/i<N>/<stage>.")
    seed_file: Optional[str] = Field(
        None, description="Seed tasks (absolute); None: the stage's built-in Self-Instruct set."
    )
    generator_model: str = Field(description="Model that synthesizes (M_t): path or hub id.")
    judge_model: Optional[str] = Field(
        None, description="Model that self-assesses (assessment.judge); None: the generator."
    )
    base_model: str = Field(description="Model that train starts from (depends on strategy).")
    train_data: list[str] = Field(
        default_factory=list, description="Curated data files train reads (total_base: all so far)."
    )
    model_out: str = Field(description="Where train leaves the model of this iteration.")
    delete_models: list[str] = Field(
        default_factory=list,
        description="Superseded iteration models the train stage deletes before it writes its own "
        "(storage.keepModels; planner/model_keep_policy.py).")
    data_size: int = Field(description="Instructions to keep (direct: iterations x dataSize).")
    shard: Shard = Field(default_factory=Shard)
    previous_eval: Optional[str] = Field(None, description="Unused by stages; reserved.")
    reuse_links: dict[str, str] = Field(
        default_factory=dict,
        description="The stage cache: this run's path -> another run's path, for each stage this run "
        "reused instead of running (its directory; train's model too). The stage makes each a "
        "symbolic link before it reads anything (docs/stage-cache.md).")
    run_uid: Optional[str] = Field(
        None, description="The run object's uid (Kubernetes only): every stage claims runDir for "
        "it (sheepdog_jobs.run_marker) and refuses a directory another run claimed.")

    def to_json(self) -> str:
        return json.dumps(
            self.model_dump(mode="json", by_alias=True, exclude_none=True),
            separators=(",", ":"),
            sort_keys=True,
        )


# The first rendered prompts of a stage and what answered them (sheepdog_jobs.samples writes
# it in synthesize's and evaluate's directories; `sheepdog status --prompts` reads it).
PROMPT_SAMPLES = "prompts.sample.jsonl"


class Layout(BaseModel):
    """Where a run lives for one executor.

    Kubernetes: root=/data, run_dir=/data/<subPath or runs/<name>>.
    Local: root=run_dir=the --workdir directory.
    Status records name models relative to root, so they read the same in both.
    """

    root: str
    run_dir: str

    def iteration_dir(self, iteration: int) -> str:
        return posixpath.join(self.run_dir, f"i{iteration}")

    def stage_dir(self, iteration: int, stage: str) -> str:
        return posixpath.join(self.iteration_dir(iteration), stage)

    def model_dir(self, iteration: int) -> str:
        return posixpath.join(self.iteration_dir(iteration), "model")

    def curated_data(self, iteration: int) -> str:
        return posixpath.join(self.stage_dir(iteration, "curate"), "kept.jsonl")

    def resolve(self, path: str) -> str:
        """A user path (seed, model): absolute stays; relative is under root; hub ids stay."""
        if path.startswith("/"):
            return path
        return posixpath.join(self.root, path)

    def relative(self, path: str) -> str:
        if path.startswith(self.root.rstrip("/") + "/"):
            return path[len(self.root.rstrip("/")) + 1 :]
        return path


def kube_layout(run_name: str, spec: RunSpec) -> Layout:
    sub = spec.storage.sub_path or f"runs/{run_name}"
    return Layout(root=VOLUME_MOUNT, run_dir=posixpath.join(VOLUME_MOUNT, sub))


STAGE_MODULE = "sheepdog_jobs"
LAUNCHER = "torchrun"  # torch's launcher, installed beside the python that has torch


@dataclass(frozen=True)
class Rendezvous:
    """How the torchrun agents of a multi-node train find each other (Kubernetes only):
    torchrun's elastic c10d rendezvous at `endpoint` (host:port), whose agents restart the
    whole group in place, up to `max_restarts` times, when any rank fails."""

    endpoint: str
    run_id: str
    max_restarts: int


def train_ranks(spec: RunSpec) -> int:
    """Processes of a train stage: one rank per GPU on every node (gpus x nodes); a CPU
    stage (gpus: 0) runs one rank per node."""
    train = spec.stages.train
    return max(1, train.gpus) * train.nodes


def launcher_args(spec: RunSpec, rendezvous: Optional[Rendezvous] = None) -> list[str]:
    """torchrun's flags for the train stage; [] when one process is the whole world.

    Without a rendezvous (one node, or `sheepdog run`, which runs every rank on its own
    machine) the ranks meet on localhost (--standalone): the command of a one-node pod and of
    a laptop are the same. A crash of any rank then ends the launcher with it (no restarts):
    the attempt fails and the executor's retry reruns the group."""
    train = spec.stages.train
    if rendezvous is None:
        ranks = train_ranks(spec)
        return [] if ranks == 1 else ["--standalone", "--nnodes=1", f"--nproc-per-node={ranks}"]
    return [
        f"--nnodes={train.nodes}",
        f"--nproc-per-node={max(1, train.gpus)}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={rendezvous.endpoint}",
        f"--rdzv-id={rendezvous.run_id}",
        f"--max-restarts={rendezvous.max_restarts}",
    ]


def _launcher(python: str) -> list[str]:
    """torchrun of the same environment as `python`: a bare `python` (a pod) finds it on the
    image's PATH; an interpreter's path (the local executor) has it beside it, else runs it as
    the module it is."""
    if "/" not in python:
        return [LAUNCHER]
    beside = Path(python).with_name(LAUNCHER)
    return [str(beside)] if beside.exists() else [python, "-m", "torch.distributed.run"]


def stage_command(
    config: StageConfig,
    python: str = "python",
    summary_file: str = TERMINATION_LOG,
    module: str = STAGE_MODULE,
    rendezvous: Optional[Rendezvous] = None,
    config_file: Optional[str] = None,
) -> list[str]:
    """The one command line of a stage, for both executors. `module` exists for tests, which
    run a fake stage program; products always run sheepdog_jobs. A train stage of more than
    one rank runs under torchrun (`launcher_args`); every other stage is one process.
    `config_file`: where the stage finds config.to_json() (a cluster's mounted ConfigMap,
    kube/stage_config_map.py); None puts the JSON itself on the command line (local runs)."""
    launch = launcher_args(config.spec, rendezvous) if config.stage == "train" else []
    head = [*_launcher(python), *launch] if launch else [python]
    return [
        *head,
        "-m",
        module,
        config.stage,
        "--config",
        config_file or config.to_json(),
        "--summary-file",
        summary_file,
    ]


# Keys of each stage's one-line JSON summary (its termination message, < 4 KB).
SummaryKey = Literal[
    "stage", "iteration", "ok", "skipped", "seconds",
    "generated", "assessed", "parseFailures", "meanQuality", "meanFollowing",  # synthesize
    "kept", "keepRate", "dropped",  # curate
    "trainLoss", "evalLoss", "samples", "model",  # train
    "evaluation",  # evaluate
]
