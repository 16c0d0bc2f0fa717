"""Every `sheepdog[EXTRA]` that the code or the docs tell a user to install is an extra that
operator/pyproject.toml defines (export/s3.py once named a `sheepdog[s3]` that did not exist)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NAMED = re.compile(r"sheepdog\[([a-z0-9_,-]+)\]")


def test_every_extra_named_is_defined():
    extras = set(tomllib.loads((REPO / "operator" / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    sources = [*(REPO / "operator" / "sheepdog").rglob("*.py"), REPO / "README.md", *(REPO / "docs").glob("*.md")]
    named = {}
    for path in sources:
        for match in NAMED.finditer(path.read_text(encoding="utf-8")):
            for extra in match.group(1).split(","):
                named.setdefault(extra, set()).add(str(path.relative_to(REPO)))
    assert {"s3", "export", "operator"} <= set(named)  # the scan finds what it is meant to find
    missing = {extra: sorted(where) for extra, where in named.items() if extra not in extras}
    assert not missing, f"extras named but not defined in operator/pyproject.toml: {missing}"
