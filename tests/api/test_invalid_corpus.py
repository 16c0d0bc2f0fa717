"""The invalid-manifest corpus: every file under invalid/ is rejected by the loader with its
expected message, every file under valid/ (and examples/) is accepted.

Header comments of an invalid manifest:
  # expect: FRAGMENT          (repeatable) must appear in the error, from pydantic and from the
                              API server alike (usually the camelCase field path)
  # expect-server: FRAGMENT   (repeatable) replaces the expect lines for the API server
  # server: accepts           the API server cannot express the rule and stores the manifest;
                              the operator's loader rejects it (tests/operator/test_crd_apply.py)

The same corpus is applied to a real API server in tests/operator/test_crd_apply.py.
"""

from __future__ import annotations

import copy
import pathlib
from dataclasses import dataclass, field

import pytest
import yaml
from pydantic import ValidationError

from sheepdog.api.spec import SelfAlignmentRun

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
INVALID = sorted((HERE / "invalid").glob("*.yaml"))
VALID = sorted((HERE / "valid").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@dataclass
class Case:
    path: pathlib.Path
    expect: list[str] = field(default_factory=list)
    expect_server: list[str] = field(default_factory=list)
    server_accepts: bool = False

    @property
    def server_fragments(self) -> list[str]:
        return self.expect_server or self.expect

    def document(self) -> dict:
        return yaml.safe_load(self.path.read_text())


def read_case(path: pathlib.Path) -> Case:
    case = Case(path)
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        key, _, value = line.lstrip("#").strip().partition(":")
        value = value.strip()
        if key == "expect":
            case.expect.append(value)
        elif key == "expect-server":
            case.expect_server.append(value)
        elif key == "server":
            assert value == "accepts", f"{path.name}: unknown '# server:' value {value!r}"
            case.server_accepts = True
    return case


CASES = [read_case(p) for p in INVALID]


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 24
    assert len(VALID) >= 3


@pytest.mark.parametrize("case", CASES, ids=[c.path.stem for c in CASES])
def test_invalid_manifest_has_an_expectation(case: Case) -> None:
    assert case.expect, f"{case.path.name}: no '# expect:' header"
    assert all(case.expect), f"{case.path.name}: empty '# expect:' fragment"


@pytest.mark.parametrize("case", CASES, ids=[c.path.stem for c in CASES])
def test_invalid_manifest_is_rejected_by_pydantic(case: Case) -> None:
    with pytest.raises(ValidationError) as info:
        SelfAlignmentRun.model_validate(case.document())
    message = str(info.value)
    for fragment in case.expect:
        assert fragment in message, f"{case.path.name}: {fragment!r} not in:\n{message}"


@pytest.mark.parametrize("case", CASES, ids=[c.path.stem for c in CASES])
def test_invalid_manifest_is_rejected_by_the_user_facing_loader(case: Case) -> None:
    """`sheepdog run`/`render` read files through sheepdog.api.load: it must reject them too,
    naming the same field (its wording is its own, so only the first fragment is checked)."""
    import sheepdog.api.load as load
    with pytest.raises(load.RunSpecError) as info:
        load.load_run_text(case.path.read_text(), source=case.path.name)
    assert case.expect[0] in str(info.value), str(info.value)


@pytest.mark.parametrize("path", VALID + EXAMPLES, ids=[p.stem for p in VALID + EXAMPLES])
def test_valid_manifest_is_accepted(path: pathlib.Path) -> None:
    run = SelfAlignmentRun.model_validate(yaml.safe_load(path.read_text()))
    assert run.kind == "SelfAlignmentRun"


def _prune_nulls(obj):
    """The API server drops null values of non-nullable fields before defaulting."""
    if isinstance(obj, dict):
        return {k: _prune_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_prune_nulls(v) for v in obj]
    return obj


@pytest.mark.parametrize("path", VALID + EXAMPLES, ids=[p.stem for p in VALID + EXAMPLES])
def test_valid_manifest_is_stored_as_pydantic_reads_it(path: pathlib.Path) -> None:
    """What the API server would store (nulls pruned, structural defaults applied) is what
    pydantic fills in, so the operator and `sheepdog run` see the same run."""
    from sheepdog.api.crd import spec_schema
    from tests.api.test_crd import apply_defaults

    doc = yaml.safe_load(path.read_text())
    stored = apply_defaults(_prune_nulls(copy.deepcopy(doc["spec"])), spec_schema())
    assert stored == SelfAlignmentRun.model_validate(doc).spec.to_wire()
