"""`sheepdog export-data`: a run's curated pairs as a Hugging Face dataset.

What curate wrote for each iteration (i<N>/curate/kept.jsonl, and dropped.jsonl with each
pair's reason, both listed in its _SUCCESS manifest) becomes parquet files through `datasets`,
in two layouts, one split per iteration (`iteration_1`, `iteration_2`, ...):

- `messages` (the default config): a `messages` column of user/assistant turns, what TRL's
  SFTTrainer and most chat fine-tuning tools read;
- `alpaca`: instruction / input / output columns, LLaMA-Factory's alpaca layout, with a
  dataset_info.json naming every iteration's file (and each layout's whole folder) for it;
- with --include-dropped, `messages_dropped` and `alpaca_dropped`: the pairs curate dropped,
  with a `reason` column (rule_<rule>, low_score, below_keep_fraction, unscored, ...).

Every row carries its pair `id`, its `iteration` and its self-assessment scores (`quality`,
`following`; null when the criterion was not judged). README.md is the dataset card
(data_card.py) with the run's settings, counts and filters; its `configs` section is what
lets `datasets.load_dataset(DIR, "alpaca")` find the files.

The folder is built locally, then moved into place (a directory), uploaded to S3 (README.md
last: its presence means the upload is whole) or pushed to the hub (hub.py).
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sheepdog.api.load import RunSpecError, load_run
from sheepdog.api.spec import RunSpec
from sheepdog.export.config import ExportError, is_hf, is_remote, is_s3
from sheepdog.export.hub import push_folder, repo_id_of
from sheepdog.export.write import replace_dir
from sheepdog.local.workdir_files import REPORT_FILE, RUN_FILE, read_json

CARD = "README.md"
LLAMA_FACTORY_INFO = "dataset_info.json"
DATA = "data"
ITERATION_DIR = re.compile(r"^i([1-9][0-9]*)$")
CURATE_MANIFEST = "_SUCCESS"
LAYOUTS = ("messages", "alpaca")


@dataclass
class IterationPairs:
    iteration: int
    kept: list[dict[str, Any]]
    dropped: Optional[list[dict[str, Any]]]  # None: curate recorded none for this iteration
    summary: dict[str, Any] = field(default_factory=dict)  # curate's summary (kept, assessed, dropped reasons)


@dataclass
class RunPairs:
    name: str
    spec: RunSpec
    report: dict[str, Any]
    iterations: list[IterationPairs]
    run_dir: Path  # the volume root of a local run: where a relative model path lives

    def record(self, iteration: int) -> dict[str, Any]:
        """The report's record of `iteration` (generated, trainLoss, evaluation), {} if none."""
        for r in self.report.get("iterations") or []:
            if isinstance(r, dict) and r.get("iteration") == iteration:
                return r
        return {}


# --- reading the run directory -----------------------------------------------------------------


def read_run(run_dir: Path, include_dropped: bool = False) -> RunPairs:
    """The run's spec (run.yaml), its report (report.json, when there) and the curated pairs of
    every iteration whose curate finished. Raises ExportError when there is nothing to export."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: no such directory")
    try:
        run = load_run(run_dir / RUN_FILE)
    except RunSpecError as err:
        raise ExportError(f"{run_dir}: needs the run's {RUN_FILE} (as `sheepdog run` writes it): {err}") from None
    report = read_json(run_dir / REPORT_FILE)
    iterations = []
    for number in sorted(int(m.group(1)) for p in run_dir.iterdir() if (m := ITERATION_DIR.match(p.name))):
        pairs = _read_curated(run_dir / f"i{number}" / "curate", number, include_dropped)
        if pairs is not None:
            iterations.append(pairs)
    if not iterations:
        raise ExportError(f"{run_dir}: no iteration has finished curating yet (no i<N>/curate/{CURATE_MANIFEST})")
    return RunPairs(run.metadata.name, run.spec, report if isinstance(report, dict) else {}, iterations, run_dir)


def _read_curated(curate_dir: Path, iteration: int, include_dropped: bool) -> Optional[IterationPairs]:
    manifest = read_json(curate_dir / CURATE_MANIFEST)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return None  # curate has not finished this iteration: its files may be half written
    files, counts = manifest["files"], manifest.get("counts") or {}
    kept = _read_listed(curate_dir, "kept.jsonl", files, counts.get("kept"))
    dropped = None
    if include_dropped and "dropped.jsonl" in files:
        dropped = _read_listed(curate_dir, "dropped.jsonl", files, counts.get("dropped"))
    return IterationPairs(iteration, kept, dropped, dict(manifest.get("summary") or {}))


def _read_listed(folder: Path, name: str, files: dict, count: Any) -> list[dict[str, Any]]:
    """A JSONL file curate's manifest lists, checked against the manifest's byte size and
    record count: a file changed or cut after curate finished is refused, not exported."""
    path = folder / name
    entry = files.get(name) or {}
    try:
        size = path.stat().st_size
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ExportError(f"{path}: listed in {CURATE_MANIFEST} but unreadable: {err}") from None
    if entry.get("bytes") is not None and size != entry["bytes"]:
        raise ExportError(f"{path}: {size} bytes, but {CURATE_MANIFEST} recorded {entry['bytes']} "
                          "(changed after curate finished)")
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError as err:
                raise ExportError(f"{path}:{number}: not JSON: {err}") from None
    if isinstance(count, int) and count != len(records):
        raise ExportError(f"{path}: {len(records)} records, but {CURATE_MANIFEST} recorded {count}")
    return records


# --- rows ----------------------------------------------------------------------------------------


def user_turn(record: dict[str, Any]) -> str:
    """The user's message of a pair: the instruction, then its input on the next line when it
    has one (as LLaMA-Factory joins an alpaca prompt and query), so both layouts hold the same
    conversation."""
    instruction, given = str(record.get("instruction") or ""), str(record.get("input") or "")
    return f"{instruction}\n{given}" if given.strip() else instruction


def _common(record: dict[str, Any], iteration: int, reason: Optional[str]) -> dict[str, Any]:
    scores = record.get("scores") if isinstance(record.get("scores"), dict) else {}
    row = {"id": str(record.get("id") or ""), "iteration": iteration,
           "quality": _score(scores.get("quality")), "following": _score(scores.get("following"))}
    if reason is not None:
        row["reason"] = reason
    return row


def _score(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def alpaca_row(record: dict[str, Any], iteration: int, reason: Optional[str] = None) -> dict[str, Any]:
    return {"instruction": str(record.get("instruction") or ""), "input": str(record.get("input") or ""),
            "output": str(record.get("output") or ""), **_common(record, iteration, reason)}


def messages_row(record: dict[str, Any], iteration: int, reason: Optional[str] = None) -> dict[str, Any]:
    messages = [{"role": "user", "content": user_turn(record)},
                {"role": "assistant", "content": str(record.get("output") or "")}]
    return {"messages": messages, **_common(record, iteration, reason)}


def features(layout: str, dropped: bool):
    """Fixed column types: an iteration that kept nothing still writes a file with the same
    schema, which `datasets` needs to read the splits of one config together."""
    from datasets import Features, Value

    head = ({"messages": [{"role": Value("string"), "content": Value("string")}]} if layout == "messages"
            else {"instruction": Value("string"), "input": Value("string"), "output": Value("string")})
    tail = {"id": Value("string"), "iteration": Value("int32"), "quality": Value("float64"),
            "following": Value("float64")}
    return Features({**head, **tail, **({"reason": Value("string")} if dropped else {})})


def split_name(iteration: int) -> str:
    return f"iteration_{iteration}"


def data_file(config: str, iteration: int) -> str:
    return f"{DATA}/{config}/{split_name(iteration)}.parquet"


# --- writing the folder ------------------------------------------------------------------------


def configs_of(run: RunPairs) -> list[str]:
    dropped = any(it.dropped is not None for it in run.iterations)
    return list(LAYOUTS) + ([f"{layout}_dropped" for layout in LAYOUTS] if dropped else [])


def write_folder(run: RunPairs, folder: Path) -> dict[str, Any]:
    """Parquet files, dataset_info.json and README.md into `folder`; returns the counts."""
    import datasets

    from sheepdog.export.data_card import dataset_card

    rows_of = {"messages": messages_row, "alpaca": alpaca_row}
    counts: dict[str, dict[int, int]] = {}
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a bar per small file would bury the one-line result
    try:
        _write_parquet(run, folder, rows_of, counts)
    finally:
        if bars:
            datasets.enable_progress_bars()
    (folder / LLAMA_FACTORY_INFO).write_text(json.dumps(llama_factory_info(run), indent=2) + "\n", encoding="utf-8")
    dataset_card(run, counts).save(str(folder / CARD))
    return counts


def _write_parquet(run: RunPairs, folder: Path, rows_of: dict, counts: dict[str, dict[int, int]]) -> None:
    from datasets import Dataset

    for config in configs_of(run):
        layout, dropped = config.removesuffix("_dropped"), config.endswith("_dropped")
        counts[config] = {}
        for it in run.iterations:
            if dropped and it.dropped is None:
                continue
            records = [(r, r.get("reason") or "unknown") for r in it.dropped] if dropped \
                else [(r, None) for r in it.kept]
            rows = [rows_of[layout](r, it.iteration, why) for r, why in records]
            path = folder / data_file(config, it.iteration)
            path.parent.mkdir(parents=True, exist_ok=True)
            Dataset.from_list(rows, features=features(layout, dropped)).to_parquet(str(path))
            counts[config][it.iteration] = len(rows)


def llama_factory_info(run: RunPairs) -> dict[str, Any]:
    """dataset_info.json as LLaMA-Factory reads it (its data/README.md): one entry per
    iteration and layout, and one per layout over all iterations (a folder entry: every file
    in it). Only kept pairs: the dropped ones are not training data."""
    alpaca = {"formatting": "alpaca", "columns": {"prompt": "instruction", "query": "input", "response": "output"}}
    sharegpt = {"formatting": "sharegpt", "columns": {"messages": "messages"},
                "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                         "assistant_tag": "assistant", "system_tag": "system"}}
    info: dict[str, Any] = {}
    for layout, entry, suffix in (("alpaca", alpaca, ""), ("messages", sharegpt, "_messages")):
        info[f"{run.name}{suffix}"] = {"file_name": f"{DATA}/{layout}", **entry}
        for it in run.iterations:
            info[f"{run.name}_i{it.iteration}{suffix}"] = {"file_name": data_file(layout, it.iteration), **entry}
    return info


# --- the destinations ----------------------------------------------------------------------------


def export_data(run_dir: Path, to: str, *, include_dropped: bool = False, private: Optional[bool] = None,
                api: Any = None) -> dict[str, Any]:
    """Export the run at `run_dir` to a directory, s3://bucket/prefix or hf://ORG/NAME; returns
    {to, iterations, kept, dropped, files}. `api`: the HfApi to push with (tests)."""
    if is_hf(to):
        repo_id_of(to)  # a malformed destination fails before any work
    run = read_run(run_dir, include_dropped)
    if is_remote(to):
        with tempfile.TemporaryDirectory(prefix="sheepdog-data-") as tmp:
            counts = write_folder(run, Path(tmp))
            files = _files(Path(tmp))
            if is_s3(to):
                from sheepdog.export.s3 import upload_folder

                upload_folder(Path(tmp), files, to, last=CARD)
            else:
                push_folder(Path(tmp), to, "dataset", private=private, api=api,
                            message=f"sheepdog export-data of run {run.name}")
    else:
        counts, files = _write_dir(run, Path(to))
    return {"to": to, "iterations": [it.iteration for it in run.iterations],
            "kept": sum(counts["messages"].values()),
            "dropped": sum(counts.get("messages_dropped", {}).values()), "files": len(files)}


def _files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


def _write_dir(run: RunPairs, to: Path) -> tuple[dict, list[Path]]:
    def build(folder: Path) -> tuple[dict, list[Path]]:
        return write_folder(run, folder), _files(folder)

    return replace_dir(to, run.name, exported_run, "a data export", build)


def exported_run(folder: Path) -> Optional[str]:
    """The run a data export folder was made from (its card's sheepdog_run), else None."""
    try:
        from huggingface_hub import DatasetCard

        data = DatasetCard.load(folder / CARD).data.to_dict()
    except Exception:  # noqa: BLE001 - no card, not a card, unreadable: not ours
        return None
    return data.get("sheepdog_run")
