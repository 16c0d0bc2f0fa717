"""`python -m sheepdog.export --config '<ExportConfig JSON>'|FILE --summary-file PATH`: the export
step of a run with spec.export (a Job's command on a cluster, a subprocess locally). On a
cluster the config is a file, the export's ConfigMap mounted as a stage's is
(kube/stage_config_map.py): it holds the whole spec, which has no place in `ps` or the pod spec.

Like a stage program: the one-line JSON summary goes to the summary file and is the last line
of stdout; exit 0 on success, 1 with {"ok": false, "error"} on failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from sheepdog.export.config import ExportConfig
from sheepdog.export.write import export_model


def _summary(summary: dict, path: str) -> None:
    line = json.dumps(summary, separators=(",", ":"))
    try:
        Path(path).write_text(line, encoding="utf-8")
    except OSError as err:
        print(f"sheepdog.export: cannot write the summary to {path}: {err}", file=sys.stderr)
    print(line, flush=True)


def read_config(raw: str) -> ExportConfig:
    """The ExportConfig from inline JSON (local runs) or the file that holds it (a cluster's)."""
    if raw.lstrip().startswith("{"):
        return ExportConfig.model_validate_json(raw)
    try:
        text = Path(raw).read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"config file {raw}: {err.strerror or err}") from None
    return ExportConfig.model_validate_json(text)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sheepdog.export")
    parser.add_argument("--config", required=True, help="ExportConfig as JSON, or a file holding it")
    parser.add_argument("--summary-file", required=True)
    args = parser.parse_args(argv)
    started = time.monotonic()
    base = {"stage": "export", "ok": False}
    try:
        config = read_config(args.config)
        base["iteration"] = config.iteration
        print(f"exporting iteration {config.iteration} of {config.run} from {config.model_dir} to {config.to}",
              flush=True)
        result = export_model(config)
    except Exception as err:  # noqa: BLE001 - ours (ExportError), a bad config, disk, boto3 (no bucket, denied)
        _summary({**base, "error": f"{type(err).__name__}: {err}"[:1000]}, args.summary_file)
        return 1
    _summary({**base, "ok": True, **result, "seconds": round(time.monotonic() - started, 3)}, args.summary_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
