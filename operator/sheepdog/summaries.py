"""A stage's one-line JSON summary (docs/design.md): read from its text and merged over the pods
or processes of one stage. Used by both executors: the operator reads it from termination
messages (kube/observe.py), the local executor from summary files (local/stage_process.py), so
this module knows nothing of Kubernetes.
"""

from __future__ import annotations

import json
from typing import Any, Optional


def parse_summary(text: Optional[str]) -> Optional[dict[str, Any]]:
    """The stage's one-line JSON summary; the last line that parses as a JSON object wins."""
    if not text:
        return None
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


# Only sharded synthesize splits its work (and counts) over pods; a multi-node train's pods
# all train on the same data, and rank 0 reports for the Job.
_SUM_KEYS = ("generated", "assessed", "parseFailures")
_SUM_MAP_KEYS = ("parseFailuresBy",)  # {name: count}, summed name by name
_MEAN_KEYS = {"meanQuality": "assessed", "meanFollowing": "assessed"}


def merge_summaries(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary from the summaries of an Indexed Job's pods (ordered by completion index).

    One pod: its summary as is. Several: counts are summed (parseFailuresBy name by name),
    means weighted by `assessed`,
    `seconds` is the slowest pod's, `ok` is all pods', and every other key comes from index 0
    (for multi-node train only rank 0 reports loss and model; its summary is the Job's).
    """
    if len(summaries) == 1:
        return dict(summaries[0])
    merged = dict(summaries[0])
    for key in _SUM_KEYS:
        values = [s[key] for s in summaries if isinstance(s.get(key), (int, float))]
        if len(values) > 1:
            merged[key] = sum(values)
    for key in _SUM_MAP_KEYS:
        maps = [s[key] for s in summaries if isinstance(s.get(key), dict)]
        if len(maps) > 1:
            merged[key] = {name: sum(m.get(name, 0) for m in maps) for name in sorted({n for m in maps for n in m})}
    for key, weight_key in _MEAN_KEYS.items():
        pairs = [
            (s[key], s.get(weight_key) or 0)
            for s in summaries
            if isinstance(s.get(key), (int, float))
        ]
        total = sum(w for _, w in pairs)
        if len(pairs) > 1 and total > 0:
            merged[key] = sum(v * w for v, w in pairs) / total
    secs = [s["seconds"] for s in summaries if isinstance(s.get("seconds"), (int, float))]
    if secs:
        merged["seconds"] = max(secs)
    if any("ok" in s for s in summaries):
        merged["ok"] = all(s.get("ok", True) for s in summaries)
    merged["pods"] = len(summaries)
    return merged
