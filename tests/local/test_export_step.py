"""spec.export in `sheepdog run`: the export runs as the stages do (a subprocess of the same
command as the cluster's Job, its attempts and summary files), before the run succeeds."""

from __future__ import annotations

import io
import json

from sheepdog.local import run_local


def test_a_local_run_exports_its_best_model_before_it_succeeds(project):
    project.write_run(iterations=2, extra="  export:\n    to: exported/demo\n")
    out = io.StringIO()
    result = run_local(project.run_file, project.workdir, out=out, plot=False)
    assert result.exit_code == 0 and result.status.phase == "Succeeded", out.getvalue()
    exported = project.workdir / "exported" / "demo"
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", "config.json", "export.json"]
    assert json.loads((exported / "export.json").read_text())["iteration"] == 2
    assert "# demo: iteration 2" in (exported / "README.md").read_text()
    record = project.report()["iterations"][-1]["stages"]["export"]
    assert record["phase"] == "Succeeded" and record["attempts"] == 1
    assert record["summary"]["to"] == str(exported) and record["summary"]["files"] == 3
    attempts = json.loads((project.workdir / "i2" / "export.attempts.json").read_text())
    assert attempts["exitCode"] == 0 and attempts["command"][1:3] == ["-m", "sheepdog.export"]
    text = out.getvalue()
    assert text.index("exporting the model of iteration 2 to exported/demo") < text.index("export succeeded")
    # again: nothing is redone
    again = run_local(project.run_file, project.workdir, out=io.StringIO(), plot=False)
    assert again.status.phase == "Succeeded"
    assert json.loads((project.workdir / "i2" / "export.attempts.json").read_text())["attempts"] == 1
