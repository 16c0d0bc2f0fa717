"""report.png's panels: keep rate, self-assessment, training loss, evaluation per iteration."""

from __future__ import annotations

import struct

from sheepdog.reporting.plot import PANELS, plot_report, report_figure

REPORT = {
    "run": "demo", "phase": "Succeeded",
    "iterations": [
        {"iteration": 0, "evaluation": {"ifeval-smoke.promptStrict": 0.2}},  # M_0: evaluation only
        {"iteration": 1, "keepRate": 0.5, "meanQuality": 7.0, "meanFollowing": 8.0, "trainLoss": 1.5,
         "evaluation": {"ifeval-smoke.promptStrict": 0.25, "heldout.meanScore": 6.0},
         "stages": {"train": {"phase": "Succeeded", "summary": {"trainLoss": 1.5, "evalLoss": 1.7}}}},
        {"iteration": 2, "keepRate": 0.4, "meanQuality": 7.5, "meanFollowing": 8.5, "trainLoss": 1.2,
         "evaluation": {"ifeval-smoke.promptStrict": 0.3, "heldout.meanScore": 6.5},
         "stages": {"train": {"phase": "Succeeded", "summary": {"trainLoss": 1.2, "evalLoss": 1.4}}}},
    ],
}


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def lines_of(ax) -> dict[str, list[float]]:
    return {line.get_label(): [float(y) for y in line.get_ydata()] for line in ax.get_lines()}


def test_figure_has_the_four_panels_with_losses_and_metrics_per_iteration():
    import matplotlib.pyplot as plt

    fig = report_figure(REPORT)
    try:
        axes = fig.axes
        assert [ax.get_title() for ax in axes] == list(PANELS)
        loss = lines_of(axes[2])
        assert loss["train (last epoch)"][1:] == [1.5, 1.2] and loss["validation"][1:] == [1.7, 1.4]
        evaluation = lines_of(axes[3])
        assert evaluation["ifeval-smoke.promptStrict"] == [0.2, 0.25, 0.3]
        assert evaluation["heldout.meanScore"][1:] == [6.0, 6.5]
        assert [float(t) for t in axes[3].get_xticks()] == [0, 1, 2]
    finally:
        plt.close(fig)


def test_without_evaluation_the_panel_says_so(tmp_path):
    import matplotlib.pyplot as plt

    fig = report_figure({"run": "r", "iterations": [{"iteration": 1, "trainLoss": 2.0}]})
    try:
        assert lines_of(fig.axes[3]) == {}
        assert "no evaluation" in fig.axes[3].texts[0].get_text()
        assert list(lines_of(fig.axes[2])) == ["train (last epoch)"]  # no validation loss known
    finally:
        plt.close(fig)


def test_plot_writes_a_png_of_the_figure_size(tmp_path):
    assert plot_report(REPORT, tmp_path / "r.png")
    assert png_size(tmp_path / "r.png") == (1100, 750)
    assert not plot_report({"iterations": []}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
