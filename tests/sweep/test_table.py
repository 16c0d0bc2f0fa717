"""The comparison table (pure): rows per cell, iteration x metric columns, repeats as
mean ± sd, the best of each ranked column marked, in text, Markdown and CSV."""

from __future__ import annotations

import csv
import io

from sheepdog.sweep.records import cell_record, reused_stages, saved_gpu_seconds
from sheepdog.sweep.grid import Cell
from sheepdog.sweep.table import Column, build_table, format_csv, format_markdown, format_text


def cell(c, r, kept, loss, acc, phase="Succeeded"):
    return {"name": f"c-{c}-s{r}", "group": f"c-{c}", "phase": phase,
            "settings": {"filter.threshold": c, "synthesis.randomSeed": r},
            "iterations": [{"iteration": 0, "evaluation": {"ifeval.promptLoose": 0.3}},
                           {"iteration": 1, "kept": kept, "trainLoss": loss, "evaluation": {"ifeval.promptLoose": acc}}]}


CELLS = [cell(-1, 0, 12, 1.0, 0.30), cell(-1, 1, 14, 1.2, 0.34),
         cell(5, 0, 6, 0.8, 0.40), cell(5, 1, 8, 0.9, 0.42),
         cell(8, 0, 2, 1.5, 0.20), cell(8, 1, 2, 1.7, 0.22)]


def test_rows_columns_and_repeats():
    t = build_table(CELLS)
    assert [r["group"] for r in t.rows] == ["c--1", "c-5", "c-8"]
    assert t.settings == ["filter.threshold"]  # the seed is the repeat, not a setting
    assert [c.title for c in t.columns] == ["i0 ifeval.promptLoose", "i1 kept", "i1 train loss",
                                            "i1 ifeval.promptLoose"]
    kept = t.rows[0]["values"][Column(1, "kept", None)]
    assert (kept.mean, round(kept.sd, 6), kept.n) == (13, 1.414214, 2)


def test_best_per_column():
    t = build_table(CELLS)
    assert t.best[Column(1, "ifeval.promptLoose", "max")] == {"c-5"}
    assert t.best[Column(1, "train loss", "min")] == {"c-5"}
    assert Column(1, "kept", None) not in t.best            # kept is not ranked
    assert Column(0, "ifeval.promptLoose", "max") not in t.best  # all equal: nothing stands out


def test_text_markdown_csv():
    t = build_table(CELLS)
    text = format_text(t).splitlines()
    assert text[0].split()[:4] == ["cell", "filter.threshold", "runs", "phase"]
    row5 = text[3]
    assert row5.startswith("c-5") and "0.41 ± 0.0141 *" in row5 and "0.85 ± 0.0707 *" in row5
    assert "13 ± 1.41" in text[2] and "*" not in text[2]
    md = format_markdown(t).splitlines()
    assert md[0] == "| cell | filter.threshold | runs | phase | i0 ifeval.promptLoose | i1 kept | i1 train loss | i1 ifeval.promptLoose |"
    assert md[1] == "|---|---|---|---|---:|---:|---:|---:|"
    assert "**0.41 ± 0.0141**" in md[3]
    rows = list(csv.DictReader(io.StringIO(format_csv(t))))
    assert rows[1]["cell"] == "c-5" and float(rows[1]["i1 kept"]) == 7 and float(rows[1]["i1 kept sd"]) > 1.41
    assert rows[1]["best"] == "i1 train loss;i1 ifeval.promptLoose" and rows[2]["best"] == ""


def test_single_runs_have_no_sd_and_missing_values_show_a_dash():
    cells = [dict(CELLS[0], group="a"), {"name": "b", "group": "b", "settings": {"filter.threshold": 5},
                                         "phase": "Running", "iterations": []}]
    t = build_table(cells)
    text = format_text(t)
    assert "±" not in text and "Running" in text
    assert text.splitlines()[3].split()[-3:] == ["-", "-", "-"]
    assert "sd" not in format_csv(t).splitlines()[0]


def test_cell_record_and_sharing():
    status = {"phase": "Succeeded", "gpuSeconds": 30.0, "iterations": [
        {"iteration": 1, "kept": 4, "stages": {
            "synthesize": {"phase": "Succeeded", "reusedFrom": "ns/abl-c-5/iteration-1/synthesize"},
            "curate": {"phase": "Succeeded", "gpuSeconds": 0}}}]}
    producer = {"phase": "Succeeded", "iterations": [
        {"iteration": 1, "stages": {"synthesize": {"phase": "Succeeded", "gpuSeconds": 120.0}}}]}
    c = Cell("c-m1", "c-m1", {"filter.threshold": -1}, 0, "abl-c-m1")
    rec = cell_record(c, status, include_stages=False)
    assert rec["reused"] == [{"iteration": 1, "stage": "synthesize", "from": "ns/abl-c-5/iteration-1/synthesize"}]
    assert rec["iterations"] == [{"iteration": 1, "kept": 4}] and rec["phase"] == "Succeeded"
    assert cell_record(c, None)["phase"] == "NotCreated"
    assert saved_gpu_seconds({"abl-c-m1": status, "abl-c-5": producer}) == 120.0
    assert saved_gpu_seconds({"abl-c-m1": status}) == 0.0  # the producer is not among them
    assert reused_stages(producer) == []
