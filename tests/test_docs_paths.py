"""The docs stay true to the tree: every repository path and every `make` target that README.md
and docs/*.md name exists (a renamed module or a dropped target breaks a reader's next step).

A path counts when its first segment is a tracked top-level entry (operator/, tests/,
examples/, ...) or one of the package folders the docs abbreviate from (sheepdog/...,
planner/..., stages/...); it must then exist under the repository or one of those package
roots. A pytest node id (`tests/x.py::test_y[...]`) also needs its test function. A document
named alone (`design.md`) must be one of the repository's: a reader has nothing else. Not
checked: placeholders (NAME, DIR, <...>, {...}, *), paths git ignores (what a command writes,
e.g. runs/...), URLs and absolute paths (the run's volume, a container's).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Where an abbreviated path (sheepdog/export/s3.py, planner/export_policy.py) is looked up.
ROOTS = [REPO, REPO / "operator", REPO / "operator" / "sheepdog", REPO / "jobs", REPO / "jobs" / "sheepdog_jobs",
         REPO / "charts" / "sheepdog"]
PACKAGE_DIRS = {"sheepdog", "sheepdog_jobs", "planner", "kube", "local", "reporting", "stages", "evaluation",
                "engines", "filters", "training", "templates"}
WORD = re.compile(r"[\w./-]+(?:::[\w-]+)?")
MAKE = re.compile(r"`make ([a-z][\w-]*)")  # in prose, only a quoted command: "make sure" is English
MAKE_LINE = re.compile(r"^\s*(?:\$ )?make ([a-z][\w-]*)", re.M)  # in a fenced code block
DOC_NAME = re.compile(r"(?<![\w/.-])([\w.-]+\.md)\b")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)


def tracked() -> list[str]:
    return subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()


def tracked_top_level() -> set[str]:
    return {path.split("/")[0] for path in tracked()}


def outside_documents(text: str, names: set[str]) -> list[str]:
    """Documents named alone (ISHEEP.md) that the repository does not hold."""
    return sorted({name for name in DOC_NAME.findall(text) if name not in names})


def ignored(path: str) -> bool:
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0


def placeholder(word: str) -> bool:
    return any(c in word for c in "<>{}*$") or any(part.isupper() and len(part) > 1 for part in
                                                   re.split(r"[/._-]", word))


def path_words(text: str, top: set[str]) -> set[str]:
    """The words of `text` that name a path in this repository."""
    out = set()
    for word in WORD.findall(text):
        word = word.rstrip(".,;:")
        path = word.split("::")[0]
        if "/" not in path or "://" in word or path.startswith(("/", ".", "-")) or placeholder(path):
            continue
        if path.split("/")[0] in top | PACKAGE_DIRS:
            out.add(word)
    return out


def missing(word: str) -> str | None:
    """Why `word` does not name something in the tree, or None. `kube/observe.job_attempts` (a
    module's function) needs kube/observe.py to define job_attempts."""
    path, _, test = word.partition("::")
    found = next((root / path for root in ROOTS if (root / path).exists()), None)
    module, dot, name = path.rpartition(".")
    if found is None and dot and name.isidentifier() and "/" in module:
        found = next((root / f"{module}.py" for root in ROOTS if (root / f"{module}.py").is_file()), None)
        if found is not None:
            defined = re.search(rf"^\s*(def |class |async def )?{re.escape(name)}\b", found.read_text(encoding="utf-8"), re.M)
            return None if defined else f"{found.relative_to(REPO)} defines no {name}"
    if found is None:
        return None if ignored(path) else "no such file or directory"
    if test and not re.search(rf"^\s*(async )?def {re.escape(test)}\(", found.read_text(encoding="utf-8"), re.M):
        return f"no test {test} in {found.relative_to(REPO)}"
    return None


def make_words(text: str) -> set[str]:
    return set(MAKE.findall(text)) | {t for block in FENCE.findall(text) for t in MAKE_LINE.findall(block)}


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_path_and_make_target_named_exists(doc):
    text = doc.read_text(encoding="utf-8")
    top = tracked_top_level()
    problems = [f"{word}: {why}" for word in sorted(path_words(text, top)) if (why := missing(word))]
    targets = make_targets()
    problems += [f"make {t}: no such target in the Makefile" for t in sorted(make_words(text) - targets)]
    names = {path.rsplit("/", 1)[-1] for path in tracked()}
    problems += [f"{name}: not a document of this repository" for name in outside_documents(text, names)]
    assert not problems, f"{doc.relative_to(REPO)} names what the tree does not have:\n" + "\n".join(problems)


def test_the_checks_find_what_they_are_meant_to_find():
    top = tracked_top_level()
    words = path_words("see `operator/sheepdog/cli.py`, planner/export_policy.py, runs/x/report.json, "
                       "examples/presets/NAME.yaml, and/or https://x.org/a/b and tests/local/test_cli.py::test_validate",
                       top)
    assert words == {"operator/sheepdog/cli.py", "planner/export_policy.py", "tests/local/test_cli.py::test_validate"}
    assert missing("planner/export_policy.py") is None
    assert missing("operator/sheepdog/nope.py") == "no such file or directory"
    assert missing("tests/local/test_cli.py::test_nope") == "no test test_nope in tests/local/test_cli.py"
    assert missing("kube/observe.job_attempts") is None
    assert missing("kube/observe.no_such_function") == "operator/sheepdog/kube/observe.py defines no no_such_function"
    assert {"demo", "test", "crds"} <= make_targets()
    assert outside_documents("see design.md and ISHEEP.md, docs/spec.md", {"design.md", "spec.md"}) == ["ISHEEP.md"]
    text = "run `make demo`; make sure it works:\n```bash\nmake test-all   # all\n```\n"
    assert make_words(text) == {"demo", "test-all"}
