"""The report table and plot."""

from __future__ import annotations

from sheepdog.reporting.plot import plot_report
from sheepdog.local.report import COLUMNS, format_report, format_table, rows_of

REPORT = {
    "run": "demo", "phase": "Succeeded", "reason": "Completed", "message": "2 iterations finished",
    "bestIteration": 2, "bestModel": "i2/model",
    "iterations": [
        {"iteration": 1, "generated": 16, "assessed": 15, "parseFailures": 1, "kept": 7, "keepRate": 0.4667,
         "meanQuality": 2.345, "meanFollowing": 3.1, "trainLoss": 1.2345, "evaluation": {"ifeval-smoke.promptStrict": 0.25}},
        {"iteration": 2, "generated": 16},
    ],
}


def test_rows_show_every_column_and_dashes_for_unknowns():
    rows = rows_of(REPORT)
    assert rows[0] == ["1", "16", "15", "1", "7", "46.7%", "2.35", "3.1", "1.23", "ifeval-smoke.promptStrict=0.25"]
    assert rows[1] == ["2", "16", "-", "-", "-", "-", "-", "-", "-", "-"]


def test_table_and_report_text():
    table = format_table(REPORT).splitlines()
    assert table[0].split("  ")[0] == "iteration" and all(c in table[0] for c in COLUMNS)
    assert len(table) == 4
    text = format_report(REPORT)
    assert text.startswith("run demo: Succeeded (Completed)\n  2 iterations finished")
    # no stopping metric compared the iterations: the model is the last one, not a "best"
    assert text.endswith("last iteration: 2, model i2/model (no stopping metric chose a best)")
    chosen = format_report({**REPORT, "bestIteration": 1, "bestModel": "i1/model",
                            "bestBy": "ifeval-smoke.promptStrict"})
    assert chosen.endswith("best: iteration 1 by ifeval-smoke.promptStrict, model i1/model")
    assert format_table({"iterations": []}).count("\n") == 1


def test_plot_writes_a_png(tmp_path):
    assert plot_report(REPORT, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert not plot_report({"iterations": []}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_report_holds_the_gpu_cost_keys_of_status():
    from sheepdog.api.status import RunStatus
    from sheepdog.local.report import report_of

    status = RunStatus.model_validate({"gpuSeconds": 90, "iterations": [
        {"iteration": 1, "gpuSeconds": 90, "stages": {"train": {"phase": "Succeeded", "gpuSeconds": 90}}}]})
    report = report_of("demo", status)
    assert report["gpuSeconds"] == 90 and report["iterations"][0]["gpuSeconds"] == 90
    assert report["iterations"][0]["stages"]["train"]["gpuSeconds"] == 90
