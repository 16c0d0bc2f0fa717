"""The license of a run's base model, for the cards of what the run made from it.

A fine-tuned model inherits its base's license, and the pairs are the base model's output, so
both cards carry the base's license when it can be found without the network: the front
matter of the base's README.md (its model card) or a `license` key in its config.json, read
from the model directory or, for a hub id, from the local Hugging Face cache. Nothing found:
no license is claimed (the card says so rather than guessing).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import yaml

from sheepdog.export.hub import is_hub_id


def base_license(base: str, root: Optional[str] = None) -> dict[str, str]:
    """{"license": id} and, for license "other", license_name / license_link when the base's
    card names them; {} when nothing is found. `root`: where a relative base path lives."""
    for source in _sources(base, root):
        found = _from_card(source) if source.name == "README.md" else _from_config(source)
        if found:
            return found
    return {}


def license_of(base: str, root: Optional[str] = None) -> Optional[str]:
    return base_license(base, root).get("license")


def _sources(base: str, root: Optional[str]) -> list[Path]:
    """The base's README.md and config.json: in its directory, or in the hub cache."""
    path = Path(base) if Path(base).is_absolute() or root is None else Path(root) / base
    if path.is_dir():
        return [path / "README.md", path / "config.json"]
    if not is_hub_id(base):
        return []
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return []
    cached = [try_to_load_from_cache(base, name) for name in ("README.md", "config.json")]
    return [Path(c) for c in cached if isinstance(c, str)]  # else None or a "known missing" marker


def _from_card(readme: Path) -> dict[str, str]:
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError:
        return {}
    if not text.startswith("---"):
        return {}
    front, sep, _ = text[3:].partition("\n---")
    if not sep:
        return {}
    try:
        meta = yaml.safe_load(front)
    except yaml.YAMLError:
        return {}
    return _pick(meta)


def _from_config(config: Path) -> dict[str, str]:
    try:
        meta = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return _pick(meta)


def _pick(meta: Any) -> dict[str, str]:
    if not isinstance(meta, dict) or not isinstance(meta.get("license"), str) or not meta["license"].strip():
        return {}
    out = {"license": meta["license"].strip()}
    for key in ("license_name", "license_link"):
        if isinstance(meta.get(key), str):
            out[key] = meta[key]
    return out
