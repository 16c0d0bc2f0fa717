"""Density filters (paper Table 3; ISHEEP.md stage fact 5): diversity by clustering.

``density``: k-means over the pairs' last-layer embeddings with K = ``filter.clusters``
(paper: 3000), capped at the number of pairs, then sample evenly from every cluster until the
keep budget is reached.
``density-ppl``: the same clusters, but inside each cluster prefer the pairs with the lowest
perplexity under the current model.

Even sampling, precisely: rounds. In each round every cluster that still has members gives
its next member (density: members in a seeded random order; density-ppl: by ascending
perplexity, unusable perplexities last); the round's candidates are taken in a seeded random
cluster order (density) or by ascending perplexity (density-ppl), until ``keep`` pairs are
taken. So with keep >= K every cluster contributes at least one pair, small clusters are never
starved by big ones, and the result does not depend on the input order beyond the seed.

Both functions are pure: the embeddings (numpy array [n, d]) and perplexities are computed by
the glue (filters/__init__.py). Dropped reason: "density_not_sampled".
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from sheepdog_jobs.filters.ppl import usable_ppl

__all__ = ["cluster_labels", "select_by_density", "select_by_density_ppl", "even_sample"]

Record = dict[str, Any]


def cluster_labels(embeddings, clusters: int, seed: int = 0) -> np.ndarray:
    """k-means labels (one per row) with K = min(clusters, n, distinct rows).

    Rows are L2-normalised first (cosine geometry: the mean hidden state's norm mostly
    tracks length, not content). K is also capped at the number of distinct rows, since
    k-means cannot place more centres than there are distinct points."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array [n, d], got shape {x.shape}")
    n = x.shape[0]
    if clusters < 1:
        raise ValueError(f"clusters must be >= 1, got {clusters}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    distinct = len(np.unique(np.round(x, 12), axis=0))
    k = min(clusters, n, distinct)
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=4, random_state=seed, max_iter=300)
    return model.fit_predict(x).astype(np.int64)


def even_sample(labels: Sequence[int], keep: int, *, within_key=None, round_key=None,
                seed: int = 0) -> list[int]:
    """Indices chosen by round-robin over clusters (see the module doc), in selection order.

    ``within_key(i)`` orders a cluster's members (default: seeded random);
    ``round_key(i)`` orders one round's candidates (default: seeded random cluster order)."""
    labels = [int(v) for v in labels]
    n = len(labels)
    keep = max(0, min(int(keep), n))
    rng = np.random.default_rng(seed)
    tiebreak = rng.permutation(n)  # a seeded random rank per item
    members: dict[int, list[int]] = {}
    for i, c in enumerate(labels):
        members.setdefault(c, []).append(i)
    for c in members:
        if within_key is None:
            members[c].sort(key=lambda i: tiebreak[i])
        else:
            members[c].sort(key=lambda i: (within_key(i), tiebreak[i]))
    cluster_rank = {c: r for r, c in enumerate(rng.permutation(sorted(members)).tolist())}
    chosen: list[int] = []
    depth = 0
    while len(chosen) < keep:
        candidates = [m[depth] for m in members.values() if depth < len(m)]
        if not candidates:
            break
        if round_key is None:
            candidates.sort(key=lambda i: cluster_rank[labels[i]])
        else:
            candidates.sort(key=lambda i: (round_key(i), cluster_rank[labels[i]]))
        chosen.extend(candidates[: keep - len(chosen)])
        depth += 1
    return chosen


def _split(records: Sequence[Record], chosen: Sequence[int]):
    picked = set(chosen)
    kept = [r for i, r in enumerate(records) if i in picked]
    dropped = [(r, "density_not_sampled") for i, r in enumerate(records) if i not in picked]
    return kept, dropped


def select_by_density(records: Sequence[Record], embeddings, clusters: int, keep: int,
                      seed: int = 0, labels: Optional[Sequence[int]] = None
                      ) -> tuple[list[Record], list[tuple[Record, str]]]:
    """Cluster (or take ``labels``), then sample evenly; kept and dropped in input order."""
    n = len(records)
    if labels is None:
        if len(embeddings) != n:
            raise ValueError(f"{len(embeddings)} embeddings for {n} records")
        labels = cluster_labels(embeddings, clusters, seed)
    elif len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} records")
    return _split(records, even_sample(labels, keep, seed=seed))


def select_by_density_ppl(records: Sequence[Record], embeddings, ppl: Sequence[Any], clusters: int,
                          keep: int, seed: int = 0, labels: Optional[Sequence[int]] = None
                          ) -> tuple[list[Record], list[tuple[Record, str]]]:
    """Cluster first, then inside each cluster (and across one round) prefer low perplexity."""
    n = len(records)
    if len(ppl) != n:
        raise ValueError(f"{len(ppl)} perplexities for {n} records")
    if labels is None:
        if len(embeddings) != n:
            raise ValueError(f"{len(embeddings)} embeddings for {n} records")
        labels = cluster_labels(embeddings, clusters, seed)
    elif len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} records")
    values = [usable_ppl(p) for p in ppl]

    def key(i: int) -> tuple[int, float]:
        v = values[i]
        return (1, 0.0) if v is None else (0, v if math.isfinite(v) else math.inf)

    return _split(records, even_sample(labels, keep, within_key=key, round_key=key, seed=seed))
