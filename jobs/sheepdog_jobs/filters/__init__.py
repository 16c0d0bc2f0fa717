"""The model-based filters of paper Table 3 (``filter.method``: ppl | density | density-ppl).

Selection logic is pure (filters/ppl.py, filters/density.py: records + precomputed numbers);
``apply_model_filter`` is the glue that asks the CURRENT model (the generator of this
iteration, an Engine) for the numbers:
* ``Engine.perplexity(texts)`` for ppl and density-ppl,
* ``Engine.embed(texts)`` (mean of the last layer's hidden states) for density and density-ppl,
on one text per pair: the zero-shot response prompt followed by the response, i.e. the pair as
the model saw it when answering (``pair_text``).

Records are curate's dicts (``{"id", "instruction", "input", "output", "scores", ...}``);
kept and dropped records are returned as copies annotated with ``ppl`` and/or ``cluster``
so curate's kept.jsonl / dropped.jsonl show why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from sheepdog_jobs.filters.density import cluster_labels, select_by_density, select_by_density_ppl
from sheepdog_jobs.filters.ppl import select_by_ppl, usable_ppl
from sheepdog_jobs.prompts import build_response_prompt

__all__ = ["MODEL_FILTERS", "FilterResult", "apply_model_filter", "pair_text", "needs",
           "select_by_ppl", "select_by_density", "select_by_density_ppl", "cluster_labels"]

MODEL_FILTERS = ("ppl", "density", "density-ppl")
Record = dict[str, Any]


@dataclass
class FilterResult:
    kept: list[Record]
    dropped: list[tuple[Record, str]]
    stats: dict[str, Any] = field(default_factory=dict)


def pair_text(record: Record, template: Optional[str] = None) -> str:
    """The pair as one text: the response prompt (synthesis.responsePrompt), then the response."""
    return build_response_prompt(str(record.get("instruction", "")), str(record.get("input", "")), template) \
        + str(record.get("output", ""))


def needs(method: str) -> tuple[bool, bool]:
    """(needs perplexities, needs embeddings) for a filter method."""
    if method not in MODEL_FILTERS:
        raise ValueError(f"unknown model filter {method!r}; expected one of {', '.join(MODEL_FILTERS)}")
    return method in ("ppl", "density-ppl"), method in ("density", "density-ppl")


def _annotate(result_kept, result_dropped, ppl_by_id, label_by_id, out_ppl_by_id=None):
    def note(r):
        extra = {}
        if ppl_by_id is not None:
            v = ppl_by_id[id(r)]
            extra["ppl"] = v if v is not None and v != float("inf") else None
        if out_ppl_by_id is not None:
            v = out_ppl_by_id[id(r)]
            extra["outputPpl"] = v if v is not None and v != float("inf") else None
        if label_by_id is not None:
            extra["cluster"] = label_by_id[id(r)]
        return {**r, **extra}

    return [note(r) for r in result_kept], [(note(r), why) for r, why in result_dropped]


def apply_model_filter(method: str, records: Sequence[Record], engine, *, ppl_max: float = 50.0,
                       clusters: int = 3000, keep: Optional[int] = None, seed: int = 0,
                       text_of: Callable[[Record], str] = pair_text) -> FilterResult:
    """Run filter ``method`` on ``records`` with ``engine`` (the current model).

    ``keep``: the density filters' budget (default: all records, i.e. density only orders).
    Curate passes ``spec.training.maxSamples``, what train will use at most (paper: 3000 =
    K, so every cluster gives one pair)."""
    want_ppl, want_emb = needs(method)
    records = list(records)
    if not records:
        return FilterResult([], [], {"method": method})
    texts = [text_of(r) for r in records]
    ppl = [usable_ppl(p) for p in engine.perplexity(texts)] if want_ppl else None
    # The PPL filter also checks the output alone, as the authors' scripts do.
    out_ppl = [usable_ppl(p) for p in engine.perplexity([str(r.get("output", "")) for r in records])] \
        if method == "ppl" else None
    emb = engine.embed(texts) if want_emb else None
    stats: dict[str, Any] = {"method": method}
    labels = None
    if want_emb:
        labels = cluster_labels(emb, clusters, seed)
        stats["clusters"] = int(len(set(labels.tolist())))
    budget = len(records) if keep is None else keep
    if method == "ppl":
        kept, dropped = select_by_ppl(records, ppl, ppl_max, out_ppl)
    elif method == "density":
        kept, dropped = select_by_density(records, emb, clusters, budget, seed, labels=labels)
    else:
        kept, dropped = select_by_density_ppl(records, emb, ppl, clusters, budget, seed, labels=labels)
    if ppl is not None:
        finite = [p for p in ppl if p is not None and p != float("inf")]
        stats["meanPpl"] = round(sum(finite) / len(finite), 4) if finite else None
    ppl_by_id = {id(r): p for r, p in zip(records, ppl)} if ppl is not None else None
    label_by_id = {id(r): int(c) for r, c in zip(records, labels)} if labels is not None else None
    out_by_id = {id(r): p for r, p in zip(records, out_ppl)} if out_ppl is not None else None
    kept, dropped = _annotate(kept, dropped, ppl_by_id, label_by_id, out_by_id)
    return FilterResult(kept, dropped, stats)
