"""The pins of sheepdog's lock files as constraints, for the image builds (images/*.Dockerfile).

    python lock_pins.py LOCK... [--except FREEZE] > lock-pins.txt

Prints one ``name==version`` line for every package the locks pin (requirements/locks/*.txt,
made by scripts/lock with hashes): the very lines scripts/setup-venv takes from the same locks
as the dev venv's constraints (its ``sed`` keeps the leading ``name==version`` of each entry),
so an image installs the versions the tests ran (tests/chart/test_images.py compares the two).
The hashes stay in the lock files: as constraints they would make the installer demand a hash
for every package, also for the ones a base image already has.

``--except FREEZE``: leave out every package that FREEZE pins (a base image's ``pip list
--format=freeze``): the GPU worker's base (vllm/vllm-openai) brings its own torch, vLLM and
their dependencies, which stay as they are; the lock pins the rest. Names compare normalised
(``typing_extensions`` is ``typing-extensions``).

Two locks that pin one package at different versions are an error (exit 2, naming both): as
constraints they could never be met together, and the installer's message would not say why.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from pip_check import normalise

# the leading "name==version" of a lock entry (setup-venv's sed: ^[A-Za-z0-9._-]*==[^ ]*)
_PIN = re.compile(r"^([A-Za-z0-9._-]*)==([^ ]*)")


class ConflictingPins(ValueError):
    pass


def pins(text: str) -> dict[str, str]:
    """name -> version of every entry of a lock (or freeze) text, names as written."""
    out = {}
    for line in text.splitlines():
        m = _PIN.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def lock_pins(locks: list[str], excluded: str = "") -> list[str]:
    """The constraint lines of ``locks`` (texts), less the packages ``excluded`` (a freeze
    text) pins, in the locks' order; ConflictingPins when two locks disagree."""
    skip = {normalise(n) for n in pins(excluded)}
    seen: dict[str, str] = {}
    lines = []
    for text in locks:
        for name, version in pins(text).items():
            key = normalise(name)
            if key in seen:
                if seen[key] != version:
                    raise ConflictingPins(f"{name} is locked at {seen[key]} and at {version}")
                continue
            seen[key] = version
            if key not in skip:
                lines.append(f"{name}=={version}")
    return lines


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("locks", nargs="+", type=Path)
    ap.add_argument("--except", dest="excluded", type=Path, help="a freeze whose packages stay unpinned here")
    args = ap.parse_args(argv)
    try:
        lines = lock_pins([p.read_text() for p in args.locks],
                          args.excluded.read_text() if args.excluded else "")
    except ConflictingPins as exc:
        print(f"lock_pins: {', '.join(map(str, args.locks))}: {exc}", file=sys.stderr)
        return 2
    if not lines and not args.excluded:
        print(f"lock_pins: no pins in {', '.join(map(str, args.locks))}", file=sys.stderr)
        return 2
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
