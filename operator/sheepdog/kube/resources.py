"""The stage container's resources and /dev/shm size. Pure: values in, dicts out.

GPU stages get Guaranteed QoS by default: the operator's per-GPU defaults (the chart's
`worker.resourcesPerGpu`) times the stage's `gpus`, the same figure as request and limit, so
a node under memory pressure evicts BestEffort and Burstable pods first, not a stage that took
an hour to load a 72B model. A resource the run names in `stages.<stage>.resources` (in
requests or limits) replaces the default for that resource in both. The GPU count always
comes from `gpus`, under the cluster's GPU resource name (default nvidia.com/gpu).
"""

from __future__ import annotations

import copy
import re
from decimal import Decimal
from typing import Any, Mapping, Optional

from sheepdog.api.spec import StageResources

GPU_RESOURCE = "nvidia.com/gpu"

# /dev/shm is a memory-backed emptyDir (NCCL, vLLM tensor parallel, DataLoader workers); its
# sizeLimit keeps a runaway writer from eating the pod's memory unseen. Built-in per stage;
# the chart's worker.shmSize overrides.
DEFAULT_SHM_SIZE = {"synthesize": "32Gi", "train": "64Gi", "evaluate": "16Gi", "curate": "1Gi"}

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)$")


def scale_quantity(value: Any, factor: int) -> str:
    """`8` x 4 -> "32", "64Gi" x 8 -> "512Gi", "500m" x 3 -> "1500m" (Kubernetes quantities)."""
    m = _QUANTITY.match(str(value).strip())
    if m is None:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number = Decimal(m.group(1)) * factor
    return format(number.normalize(), "f") + m.group(2)


def _quantity(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def container_resources(res: StageResources, per_gpu: Optional[Mapping[str, Any]] = None,
                        gpu_resource: str = GPU_RESOURCE) -> dict[str, Any]:
    """requests/limits of the stage container: per-GPU defaults (GPU stages only), then the
    run's own `resources`, then the GPUs from `gpus` (always wins)."""
    own = res.resources or {}
    named = {k for values in own.values() if isinstance(values, Mapping) for k in values}
    out: dict[str, Any] = {}
    if res.gpus > 0:
        for name, value in (per_gpu or {}).items():
            if name not in named:
                quantity = scale_quantity(value, res.gpus)
                for section in ("requests", "limits"):
                    out.setdefault(section, {})[name] = quantity
    gpu_names = {GPU_RESOURCE, gpu_resource}
    for section, values in own.items():
        if isinstance(values, Mapping):
            vals = {k: _quantity(v) for k, v in values.items() if k not in gpu_names}
            if vals:
                out.setdefault(section, {}).update(vals)
        else:
            out[section] = copy.deepcopy(values)
    if res.gpus > 0:
        for section in ("requests", "limits"):
            out.setdefault(section, {})[gpu_resource] = str(res.gpus)
    return out
