"""Test-only: the `sheepdog.test/*` pod annotations a run asks its stage pods to carry.

Enabled by the operator's hidden `--test-pod-annotations` flag (tests/cluster with kwok); a
production operator never copies anything.
"""

from __future__ import annotations

import json
import logging
import string
from typing import Any, Mapping

log = logging.getLogger("sheepdog.reconcile")

TEST_POD_ANNOTATIONS = "sheepdog.test/pod-annotations"
TEST_PREFIX = "sheepdog.test/"


def passthrough_annotations(run: Mapping[str, Any], iteration: int, stage: str) -> dict[str, str]:
    """The test-only pod annotations for one stage Job (enabled by `--test-pod-annotations`).

    kwok (the fake kubelet of tests/cluster) finishes pods by their annotations
    (`sheepdog.test/fail`, `sheepdog.test/termination-message`, `sheepdog.test/duration`), and
    the operator is what creates the pods. A test therefore puts, on the run,

        sheepdog.test/pod-annotations: '{"*": {...}, "train": {...}, "i2.train": {...}}'

    a JSON map from a selector (`*`, `<stage>`, `i<N>.<stage>`, most specific wins) to pod
    annotations. Only keys under `sheepdog.test/` are copied, and only when the operator runs
    with the flag, so a production operator never copies anything. Values may use
    ${iteration}, ${stage} and ${run}.
    """
    raw = ((run.get("metadata") or {}).get("annotations") or {}).get(TEST_POD_ANNOTATIONS)
    if not raw:
        return {}
    try:
        table = json.loads(raw)
    except ValueError:
        log.warning("ignoring %s: not JSON", TEST_POD_ANNOTATIONS)
        return {}
    if not isinstance(table, dict):
        return {}
    out: dict[str, str] = {}
    values = {"iteration": str(iteration), "stage": stage, "run": run["metadata"]["name"]}
    for selector in ("*", stage, f"i{iteration}.{stage}"):
        for k, v in (table.get(selector) or {}).items():
            if isinstance(k, str) and k.startswith(TEST_PREFIX):
                out[k] = string.Template(v if isinstance(v, str) else json.dumps(v)).safe_substitute(values)
    return out


def add_to_job(job: dict[str, Any], run: Mapping[str, Any], iteration: int, stage: str) -> None:
    """Put the run's test pod annotations for this stage into the Job's pod template."""
    extra = passthrough_annotations(run, iteration, stage)
    if extra:
        tmeta = job["spec"]["template"].setdefault("metadata", {})
        tmeta.setdefault("annotations", {}).update(extra)
