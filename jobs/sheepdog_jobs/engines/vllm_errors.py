"""The vLLM engine's own error, in one line.

vLLM runs its engine core in a child process. When that process dies, the caller only gets
EngineDeadError("EngineCore encountered an issue. See stack trace (above) for the root
cause."); the root cause exists only as a traceback in the child's log. The child configures its
logging from VLLM_LOGGING_CONFIG_PATH when it imports vLLM, so before starting the engine we
give it vLLM's own default configuration plus one handler that writes the exception of every
error record, as one line, to a file that the parent reads when the engine fails.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from sheepdog_jobs.cli import one_line

HANDLER = "sheepdog_last_error"


class LastErrorFile(logging.Handler):
    """Keeps the newest error (its exception when it has one) in `path`."""

    def __init__(self, path: str):
        super().__init__(level=logging.ERROR)
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        text = f"{type(exc).__name__}: {exc}" if exc is not None else record.getMessage()
        try:
            Path(self.path).write_text(one_line(text)[:2000] + "\n", encoding="utf-8")
        except OSError:
            pass  # a log handler must never raise


class EngineErrorCapture:
    """Sets VLLM_LOGGING_CONFIG_PATH for the engine process about to start (unless the user set
    their own) and reads back what it recorded."""

    def __init__(self) -> None:
        self.dir: Optional[Path] = None
        if os.environ.get("VLLM_LOGGING_CONFIG_PATH"):
            return  # the user's logging configuration wins; errors then say "see the log"
        from vllm.logger import DEFAULT_LOGGING_CONFIG

        self.dir = Path(tempfile.mkdtemp(prefix="sheepdog-vllm-"))
        config = copy.deepcopy(DEFAULT_LOGGING_CONFIG)
        config["handlers"][HANDLER] = {"()": f"{__name__}.LastErrorFile", "path": str(self.error_file)}
        config["loggers"]["vllm"]["handlers"].append(HANDLER)
        path = self.dir / "logging.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(path)

    @property
    def error_file(self) -> Path:
        return (self.dir or Path("/nonexistent")) / "last-error.txt"

    def describe(self, exc: BaseException) -> str:
        """One line naming the engine's own error when the engine process recorded one."""
        own = f"{type(exc).__name__}: {one_line(str(exc))}"
        try:
            recorded = self.error_file.read_text(encoding="utf-8").strip()
        except OSError:
            recorded = ""
        if type(exc).__name__ == "EngineDeadError":
            return f"the vLLM engine process died: {recorded or 'its error is in the log above'}"
        return f"the vLLM engine failed: {own}"

    def close(self) -> None:
        if self.dir is not None:
            if os.environ.get("VLLM_LOGGING_CONFIG_PATH", "").startswith(str(self.dir)):
                del os.environ["VLLM_LOGGING_CONFIG_PATH"]
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
