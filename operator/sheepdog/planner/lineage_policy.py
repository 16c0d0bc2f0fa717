"""Which model generates, which model is trained and on which data: training.strategy.

| strategy   | generator of iteration t   | trained from (baseModel) | train data             |
|------------|----------------------------|--------------------------|------------------------|
| one_base   | model of t-1 (base at t=1) | base                     | curated data of t      |
| one_last   | model of t-1               | model of t-1             | curated data of t      |
| total_base | model of t-1               | base                     | curated data of 1..t   |
| direct     | base                       | base                     | one iteration of T x I |

(paper §4.5, Table 2; docs/design.md). A model is named by a *reference*: the user's
spec.model.base string for the base (a path relative to the storage root, an absolute path,
or a hub id), or the absolute directory of an earlier iteration's model. Status records show
references relative to the root; stage configs get them resolved.
"""

from __future__ import annotations

from dataclasses import dataclass

from sheepdog.api.spec import RunSpec
from sheepdog.stage_config import Layout, StageConfig


def iteration_count(spec: RunSpec) -> int:
    """T. direct is one iteration that generates all the data at once."""
    return 1 if spec.training.strategy == "direct" else spec.iterations


def data_size(spec: RunSpec) -> int:
    """Instructions kept in one iteration (direct: iterations x dataSize, e.g. 20k or 30k)."""
    if spec.training.strategy == "direct":
        return spec.iterations * spec.synthesis.data_size
    return spec.synthesis.data_size


@dataclass(frozen=True)
class Lineage:
    generator: str  # model reference that synthesizes in this iteration (M_t)
    base: str  # model reference that train starts from
    train_data: tuple[str, ...]  # absolute curated data files train reads


def model_of(spec: RunSpec, iteration: int, layout: Layout) -> str:
    """The model of `iteration`: M_0 (iteration 0) is the base, M_t the model train left."""
    return spec.model.base if iteration == 0 else layout.model_dir(iteration)


def lineage(spec: RunSpec, iteration: int, layout: Layout) -> Lineage:
    strategy = spec.training.strategy
    if iteration == 0:  # M_0 is only evaluated (the baseline): nothing generates or trains
        return Lineage(spec.model.base, spec.model.base, ())
    previous = model_of(spec, iteration - 1, layout)
    if strategy == "direct":
        return Lineage(spec.model.base, spec.model.base, (layout.curated_data(iteration),))
    if strategy == "one_last":
        return Lineage(previous, previous, (layout.curated_data(iteration),))
    if strategy == "total_base":
        data = tuple(layout.curated_data(t) for t in range(1, iteration + 1))
        return Lineage(previous, spec.model.base, data)
    return Lineage(previous, spec.model.base, (layout.curated_data(iteration),))  # one_base


def judge_of(spec: RunSpec, line: Lineage) -> str:
    """The model that self-assesses an iteration's pairs (assessment.judge): the generator
    M_t (current, the paper's Algorithm 1) or the run's base in every iteration (base, the
    authors' scripts)."""
    return spec.model.base if spec.assessment.judge == "base" else line.generator


def stage_config(run_name: str, spec: RunSpec, iteration: int, stage: str, layout: Layout) -> StageConfig:
    """The complete input of one stage execution, built from the spec as it is now (so a spec
    edit applies from the next stage that starts)."""
    line = lineage(spec, iteration, layout)
    return StageConfig(
        run=run_name,
        iteration=iteration,
        stage=stage,
        spec=spec,
        root=layout.root,
        run_dir=layout.run_dir,
        out_dir=layout.stage_dir(iteration, stage),
        seed_file=layout.resolve(spec.seed.path) if spec.seed.path else None,
        generator_model=layout.resolve(line.generator),
        judge_model=layout.resolve(judge_of(spec, line)),
        base_model=layout.resolve(line.base),
        train_data=list(line.train_data),
        model_out=layout.resolve(model_of(spec, iteration, layout)),
        data_size=data_size(spec),
    )
