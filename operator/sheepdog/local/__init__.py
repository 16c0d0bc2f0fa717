"""The local executor: a run file on one machine, stages as subprocesses (`sheepdog run`)."""

from sheepdog.local.executor import STAGE_MODULE_ENV, LocalResult, default_workdir, run_local
from sheepdog.local.inputs import InputError
from sheepdog.local.workdir_files import WorkdirBusy

__all__ = ["InputError", "LocalResult", "STAGE_MODULE_ENV", "WorkdirBusy", "default_workdir", "run_local"]
