"""The stage configuration as a file: a ConfigMap per stage execution, mounted into its pods.

The StageConfig JSON (everything a stage reads, sheepdog/stage_config.py) used to be the
container command's `--config` argument, so the whole spec was in the Job and pod specs and in
every `ps` listing of the node. It is now the key `config.json` of the ConfigMap
`<job>-config-<hash8>` (hash: of that text), mounted read-only at /etc/sheepdog/stage, and the
command says `--config /etc/sheepdog/stage/config.json`. The ConfigMap is immutable and owned by
the run (it goes with the run); it is created before the Job, so a pod never waits for its
volume. The hash in its name makes a re-created one with other contents (a spec edited between
a failed Job creation and the next attempt) another object instead of a stale one under the same
name. No credential is in it either way (docs/security.md, Credentials: by reference only).
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

CONFIG_DIR = "/etc/sheepdog/stage"
CONFIG_KEY = "config.json"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
VOLUME_NAME = "stage-config"


def config_map_name(job: str, text: str) -> str:
    return f"{job}-config-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def build_config_map(job: str, namespace: str, labels: Mapping[str, str], owner: Mapping[str, Any],
                     text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": config_map_name(job, text), "namespace": namespace, "labels": dict(labels),
                     "ownerReferences": [dict(owner)]},
        "immutable": True,
        "data": {CONFIG_KEY: text},
    }


def volume(job: str, text: str) -> dict[str, Any]:
    return {"name": VOLUME_NAME, "configMap": {"name": config_map_name(job, text)}}


def mount() -> dict[str, Any]:
    return {"name": VOLUME_NAME, "mountPath": CONFIG_DIR, "readOnly": True}


def config_text(objects: list[Mapping[str, Any]]) -> str:
    """The stage configuration among a stage's objects (build_stage_objects): for readers and tests."""
    (cm,) = [o for o in objects if o.get("kind") == "ConfigMap"]
    return cm["data"][CONFIG_KEY]
