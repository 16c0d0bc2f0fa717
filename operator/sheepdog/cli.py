"""`sheepdog`: run, validate, render and inspect SelfAlignmentRuns; start the operator.

Exit codes: 0 ok, 1 the run failed (or could not proceed: another executor holds the workdir),
2 invalid input (run file, seed or model inputs, command line).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from sheepdog import __version__

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def _error(message: str) -> None:
    print(f"sheepdog: {message}", file=sys.stderr, flush=True)


# --- sheepdog run ---------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from sheepdog.api.load import RunSpecError
    from sheepdog.local import InputError, WorkdirBusy, run_local
    from sheepdog.local.executor import BESIDE_WORKDIR

    cache = None if args.no_stage_cache else (args.stage_cache or BESIDE_WORKDIR)
    try:
        result = run_local(args.run_file, args.workdir, retry_failed=args.retry_failed, plot=not args.no_plot,
                           overrides=args.set, verbose=args.verbose, stage_cache=cache)
    except (RunSpecError, InputError) as err:
        _error(str(err))
        return EXIT_INVALID
    except WorkdirBusy as err:
        _error(str(err))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _error("interrupted; run the same command again to resume")
        return 130
    if result.exit_code != EXIT_OK:
        _error(f"run {result.run} failed: {result.status.message}")
        hint = f"sheepdog run {args.run_file}" + (f" --workdir {args.workdir}" if args.workdir else "")
        _error(f"after fixing the cause, `{hint} --retry-failed` retries the failed stage")
    return result.exit_code


# --- sheepdog sweep ---------------------------------------------------------------------------


def cmd_sweep(args: argparse.Namespace) -> int:
    """A SelfAlignmentSweep's cells as local runs sharing one stage cache (sheepdog.sweep.local)."""
    from sheepdog.local import InputError
    from sheepdog.sweep.grid import SweepInvalid
    from sheepdog.sweep.local import run_sweep

    if args.parallel < 1:
        _error("--parallel must be 1 or more")
        return EXIT_INVALID
    try:
        result = run_sweep(Path(args.sweep_file), Path(args.workdir), parallel=args.parallel,
                           share=not args.no_stage_cache, plot=not args.no_plot)
    except (SweepInvalid, InputError) as err:
        _error(str(err))
        return EXIT_INVALID
    except KeyboardInterrupt:
        _error("interrupted; run the same command again to resume")
        return 130
    return result.exit_code


# --- sheepdog cache prune ---------------------------------------------------------------------


def cmd_cache_prune(args: argparse.Namespace) -> int:
    """Remove the local stage cache's objects no workdir links to (sheepdog.local.stage_cache_prune)."""
    from sheepdog.local.stage_cache import default_cache_dir
    from sheepdog.local.stage_cache_prune import prune
    from sheepdog.local.workdir_files import WorkdirBusy
    from sheepdog.sweep.local import STAGE_CACHE_DIR, SWEEP_FILE

    if args.stage_cache:
        cache = Path(args.stage_cache)
    else:  # a sweep's workdir holds its cache; a run's cache is beside its workdir
        workdir = Path(args.workdir)
        sweep = (workdir / SWEEP_FILE).is_file() or (workdir / STAGE_CACHE_DIR / ".lock").is_file()
        cache = workdir / STAGE_CACHE_DIR if sweep else default_cache_dir(workdir)
    if not cache.is_dir():
        _error(f"{cache}: no stage cache there")
        return EXIT_INVALID
    try:
        result = prune(cache, dry_run=args.dry_run)
    except WorkdirBusy as err:
        _error(f"{err}: prune when no run uses the cache {cache}; nothing was removed")
        return EXIT_FAILED
    verb = "would remove" if args.dry_run else "removed"
    print(f"{cache}: {verb} {len(result.removed)} object(s) ({result.removed_bytes / 2**20:.1f} MiB) and "
          f"{len(result.dropped_entries)} index entr{'y' if len(result.dropped_entries) == 1 else 'ies'}; "
          f"kept {len(result.kept)} object(s) linked from {len(result.workdirs)} workdir(s)")
    for key in result.removed:
        print(f"  {verb} objects/{key}")
    return EXIT_OK


# --- sheepdog validate ------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from sheepdog.api.load import RunSpecError, load_run
    from sheepdog.local.inputs import InputError, prepare_local_run
    from sheepdog.planner import data_size, iteration_count
    from sheepdog.sweep.load import is_sweep_file

    if is_sweep_file(args.run_file):
        return _validate_sweep(args)
    try:
        run = load_run(args.run_file, args.set)
        if args.workdir is not None:
            run, notes = prepare_local_run(run, Path(args.workdir), Path(args.run_file))
            for note in notes:
                print(f"note: {note}")
    except (RunSpecError, InputError) as err:
        _error(str(err))
        return EXIT_INVALID
    spec = run.spec
    problems = _fit_check(run, args)
    if problems:
        _error(f"{args.run_file}: invalid run: a stage cannot fit its GPUs (sheepdog plan shows the whole plan):\n"
               + "\n".join(f"  - {p}" for p in problems))
        return EXIT_INVALID
    print(f"{args.run_file}: valid SelfAlignmentRun {run.metadata.name}: {iteration_count(spec)} iteration(s), "
          f"strategy {spec.training.strategy}, {data_size(spec)} instructions per iteration")
    _warn_reproduction(run)
    return EXIT_OK


def _validate_sweep(args: argparse.Namespace) -> int:
    """A SelfAlignmentSweep file: every cell's child run built and validated as the operator
    builds it (sheepdog.sweep.grid.expand: one invalid cell refuses the sweep, named with its
    settings, path and reason), with --workdir each cell's seed and model found as `sheepdog
    sweep` finds them, and each child's stages checked against their GPUs."""
    from sheepdog.local.inputs import InputError
    from sheepdog.planner import data_size, iteration_count
    from sheepdog.sweep.grid import SweepInvalid, child_run, expand
    from sheepdog.sweep.load import load_sweep
    from sheepdog.sweep.local import prepare_cells

    if args.set:
        _error(f"{args.run_file}: --set applies to run files; a sweep's cells are set by its axes and cells "
               "(edit spec.template for every cell)")
        return EXIT_INVALID
    try:
        if args.workdir is not None:
            sweep, cells = prepare_cells(Path(args.run_file), Path(args.workdir))
        else:
            sweep = load_sweep(args.run_file)
            cells = expand(sweep)
    except (SweepInvalid, InputError) as err:
        _error(str(err))
        return EXIT_INVALID
    runs = [(cell, child_run(cell)) for cell in cells]
    noted: set = set()
    problems = [f"cell {cell.name}: {p}" for cell, run in runs for p in _fit_check(run, args, noted)]
    if problems:
        _error(f"{args.run_file}: invalid sweep: a stage cannot fit its GPUs:\n"
               + "\n".join(f"  - {p}" for p in problems))
        return EXIT_INVALID
    print(f"{args.run_file}: valid SelfAlignmentSweep {sweep.metadata.name}: {len(cells)} cell(s)")
    for cell, run in runs:
        print(f"  {cell.name}: run {cell.run}, {iteration_count(run.spec)} iteration(s), "
              f"strategy {run.spec.training.strategy}, {data_size(run.spec)} instructions per iteration")
    return EXIT_OK


def _model_shape(run, args):
    """The run's model shape (sheepdog.capacity): --model-config, else model.base's config.json
    as given, beside the run file, in --workdir or in the local hub cache, else the run's own
    spec.model.shape (what the operator's pre-flight plans from)."""
    from sheepdog.capacity import ModelConfigError, shape_for, shape_from_config

    search = [Path.cwd(), Path(args.run_file).resolve().parent]
    if getattr(args, "workdir", None):
        search.insert(0, Path(args.workdir))
    try:
        return shape_for(run.spec.model.base, args.model_config, search)
    except ModelConfigError:
        if args.model_config or run.spec.model.shape is None:
            raise
        return shape_from_config(run.spec.model.shape, source="spec.model.shape")


def _fit_check(run, args, noted: Optional[set] = None) -> list[str]:
    """Problems of stages that cannot fit spec.resources.gpuMemoryGiB; none (with a note, once
    per text in `noted`: a sweep's cells share their model) when the model's config.json
    cannot be read here."""
    from sheepdog.capacity import ModelConfigError, fit_problems, plan_run

    try:
        shape = _model_shape(run, args)
    except ModelConfigError as err:
        if args.model_config:
            return [str(err)]
        if noted is None or str(err) not in noted:
            print(f"note: GPU memory not checked: {err}")
        if noted is not None:
            noted.add(str(err))
        return []
    return fit_problems(plan_run(run.spec, shape, claim_gib=args.claim_gib))


# --- sheepdog plan ----------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    from sheepdog.api.load import RunSpecError, load_run
    from sheepdog.capacity import ModelConfigError, format_plan, plan_run

    try:
        run = load_run(args.run_file, args.set)
        plan = plan_run(run.spec, _model_shape(run, args), gpu=args.gpu, claim_gib=args.claim_gib)
    except (RunSpecError, ModelConfigError) as err:
        _error(str(err))
        return EXIT_INVALID
    print(json.dumps(plan, indent=2) if args.output == "json" else format_plan(plan), end="\n" if args.output == "json" else "")
    return EXIT_OK


def _warn_reproduction(run) -> None:
    """A run labelled as a reproduction of the authors' scripts (sheepdog.api.reproduction)
    gets a warning per field that departs from them; it stays valid."""
    from sheepdog.api.reproduction import REPRODUCES_LABEL, SCRIPTS, departures, is_scripts_reproduction

    if not is_scripts_reproduction(run):
        return
    found = departures(run.spec)
    for line in found:
        print(f"warning: {line}", file=sys.stderr)
    if found:
        print(f"warning: {len(found)} setting(s) depart from the authors' scripts although the run is labelled "
              f"{REPRODUCES_LABEL}: {SCRIPTS}", file=sys.stderr)


# --- sheepdog render --------------------------------------------------------------------------


def cmd_render(args: argparse.Namespace) -> int:
    from sheepdog.api.load import RunSpecError, load_run

    try:
        run = load_run(args.run_file, args.set)
    except RunSpecError as err:
        _error(str(err))
        return EXIT_INVALID
    if args.iteration < 1:
        _error("--iteration must be 1 or more")
        return EXIT_INVALID
    if not args.commands:
        try:
            from sheepdog.kube.render import render_run_yaml
        except ImportError:
            render_run_yaml = None
        if render_run_yaml is not None:
            print(render_run_yaml(run, args.namespace, iteration=args.iteration), end="")
            return EXIT_OK
        print("# sheepdog.kube is not available: printing the stage commands instead of Jobs")
    print(_stage_commands(run, args.iteration), end="")
    return EXIT_OK


def _stage_commands(run, iteration: int) -> str:
    """The command of every stage of `iteration`, as a cluster's Jobs would run them."""
    from sheepdog.planner import stage_config, stage_name
    from sheepdog.planner.stage_order import stages_of
    from sheepdog.stage_config import kube_layout, stage_command

    layout = kube_layout(run.metadata.name, run.spec)
    lines = []
    for stage in stages_of(run.spec):
        config = stage_config(run.metadata.name, run.spec, iteration, stage, layout)
        lines.append(f"# {stage_name(run.metadata.name, iteration, stage)}")
        lines.append(shlex.join(stage_command(config)))
    return "\n".join(lines) + "\n"


# --- sheepdog status --------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from sheepdog.local import default_workdir
    from sheepdog.local.report import format_report
    from sheepdog.local.workdir_files import REPORT_FILE, read_json

    if (args.dir is None) == (args.name is None):
        _error("status: give a workdir DIR or --name RUN (its default workdir runs/RUN)")
        return EXIT_INVALID
    workdir = Path(args.dir) if args.dir is not None else default_workdir(args.name)
    report = read_json(workdir / REPORT_FILE)
    if not isinstance(report, dict):
        _error(f"{workdir}: no report.json here (is it a `sheepdog run` workdir?)")
        return EXIT_INVALID
    if args.prompts:
        from sheepdog.local.report import format_prompt_samples, prompt_samples

        print(format_prompt_samples(prompt_samples(workdir)))
    elif args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return EXIT_FAILED if report.get("phase") == "Failed" else EXIT_OK


# --- sheepdog report --------------------------------------------------------------------------


def _cluster_run(args: argparse.Namespace, command: str) -> tuple[Any, Optional[dict], int]:
    """(a Kube client, the run args.run in args.namespace, 0), or (None, None, the exit code)
    after one clear line: the extra not installed, no kubeconfig, unreachable, forbidden, no run."""
    try:
        from sheepdog.kube.client import Kube
        from sheepdog.kube.transport import load_credentials
    except ImportError as err:
        _error(f"{command} needs the extra sheepdog[cli] (urllib3): {err}")
        return None, None, EXIT_INVALID
    try:
        kube = Kube(load_credentials(args.kubeconfig, args.context))
        obj = kube.get_run(args.namespace, args.run)
    except Exception as err:  # noqa: BLE001 - no kubeconfig, unreachable or forbidden: one clear line
        _error(f"{command}: cannot read SelfAlignmentRun {args.namespace}/{args.run}: {type(err).__name__}: {err}")
        return None, None, EXIT_FAILED
    if obj is None:
        _error(f"{command}: no SelfAlignmentRun {args.run} in namespace {args.namespace}")
        return None, None, EXIT_INVALID
    return kube, obj, 0


def cmd_report(args: argparse.Namespace) -> int:
    """A cluster run's report: its status read from the API server, printed and drawn as
    `sheepdog run` does for a local run."""
    from sheepdog.api.status import RunStatus
    from sheepdog.local.report import format_report, report_of
    from sheepdog.reporting.plot import plot_report

    sweep = _cluster_sweep(args)
    if sweep is not None:
        return _report_sweep(args, sweep)
    _, obj, code = _cluster_run(args, "report")
    if obj is None:
        return code
    report = report_of(args.run, RunStatus.model_validate(obj.get("status") or {}))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    if not args.no_plot and plot_report(report, Path(args.plot)):
        print(f"plot: {args.plot}")
    return EXIT_FAILED if report.get("phase") == "Failed" else EXIT_OK


def _cluster_sweep(args: argparse.Namespace) -> Optional[dict]:
    """The SelfAlignmentSweep args.run in args.namespace, or None (none of that name, no sweep
    CRD, or the cluster unreachable: the run lookup then says what is wrong)."""
    try:
        from sheepdog.kube.client import Kube
        from sheepdog.kube.sweeps import SweepReconciler
        from sheepdog.kube.transport import load_credentials

        return SweepReconciler(Kube(load_credentials(args.kubeconfig, args.context)), metrics=None).get_sweep(args.namespace, args.run)
    except Exception:  # noqa: BLE001 - see the docstring
        return None


def _report_sweep(args: argparse.Namespace, sweep: dict) -> int:
    """A sweep's comparison table from its status (sheepdog.sweep.table), and a plot per axis
    beside --plot (plot-<field>.png in its directory)."""
    from sheepdog.sweep.plot import plot_axes
    from sheepdog.sweep.policy import cells_of_status
    from sheepdog.sweep.table import FORMATS, build_table

    status = sweep.get("status") or {}
    print(f"sweep {args.run}: {status.get('phase', 'Pending')}" + (f" ({status['message']})" if status.get("message") else ""))
    table = build_table(cells_of_status(status))
    print(json.dumps(status, indent=2) if args.json else FORMATS[args.format](table))
    if status.get("reusedStages"):
        saved = status.get("savedGpuSeconds")
        print(f"\nshared stages: {status['reusedStages']}" + (f", {saved:g} GPU-seconds saved" if saved else ""))
    if not args.no_plot:
        axes = [a.get("field", "").removeprefix("spec.") for a in (sweep.get("spec") or {}).get("axes") or []]
        for path in plot_axes(table, Path(args.plot).resolve().parent, axes):
            print(f"plot: {path}")
    return EXIT_FAILED if status.get("phase") in ("Failed", "Invalid") else EXIT_OK


# --- sheepdog pull ----------------------------------------------------------------------------


def cmd_pull(args: argparse.Namespace) -> int:
    """A cluster run's directory off its PVC, through a short-lived pod (kube/pull.py)."""
    kube, obj, code = _cluster_run(args, "pull")
    if obj is None:
        return code
    from sheepdog.kube.pull import MODEL_PATTERNS, PullError, describe, pull

    obj.setdefault("metadata", {}).setdefault("namespace", args.namespace)
    dest = Path(args.to)
    try:
        files = pull(kube, obj, dest, image=args.image, timeout=args.timeout,
                     exclude=MODEL_PATTERNS if args.no_models else ())
    except PullError as err:
        _error(f"pull: {err}")
        return EXIT_FAILED
    print(f"pulled {args.namespace}/{args.run}: {describe(files, dest)}")
    return EXIT_OK


# --- sheepdog retry ---------------------------------------------------------------------------


def cmd_retry(args: argparse.Namespace) -> int:
    """Resume a Failed cluster run from the stage that failed: a new token in the run's
    annotation sheepdog.dev/retry, which the operator acts on once (kube/retry_request.py)."""
    kube, obj, code = _cluster_run(args, "retry")
    if obj is None:
        return code
    from sheepdog.kube.retry_request import RETRY_ANNOTATION, failed_at, new_token, refusal, retry_patch

    why = refusal(obj)
    if why is not None:
        _error(f"retry: {args.namespace}/{args.run}: {why}")
        return EXIT_INVALID
    token = new_token()
    try:
        kube.patch_run(args.namespace, args.run, retry_patch(token))
    except Exception as err:  # noqa: BLE001 - no kubeconfig, unreachable or forbidden: one clear line
        _error(f"retry: cannot annotate SelfAlignmentRun {args.namespace}/{args.run}: {type(err).__name__}: {err}")
        return EXIT_FAILED
    print(f"retry requested ({RETRY_ANNOTATION}={token}): the operator resumes the run from "
          f"{failed_at(obj)}\nwatch it: kubectl get sar {args.run} -n {args.namespace} -w")
    return EXIT_OK


# --- sheepdog export --------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    """A local run's model as a standalone Hugging Face directory (or S3 prefix) with a model
    card. A cluster run exports itself: spec.export runs the same export as a Job."""
    from sheepdog.api.load import RunSpecError, load_run
    from sheepdog.export import ExportError, export_config, export_model
    from sheepdog.export.config import is_remote
    from sheepdog.local.workdir_files import REPORT_FILE, RUN_FILE, read_json
    from sheepdog.stage_config import Layout

    workdir = Path(args.run).resolve()
    report = read_json(workdir / REPORT_FILE)
    if not isinstance(report, dict):
        _error(f"{args.run}: no report.json here (is it a `sheepdog run` workdir? a cluster run exports "
               "with spec.export)")
        return EXIT_INVALID
    to = args.to if is_remote(args.to) else str(Path(args.to).resolve())
    try:
        run = load_run(workdir / RUN_FILE)
        config = export_config(run.metadata.name, run.spec, report.get("iterations") or [],
                               Layout(root=str(workdir), run_dir=str(workdir)), to, args.iteration,
                               report.get("bestIteration"), datasets=args.dataset)
        result = export_model(config, private=True if args.private else None)
    except (RunSpecError, ExportError) as err:
        _error(f"export: {err}")
        return EXIT_INVALID
    except Exception as err:  # noqa: BLE001 - disk, S3 (boto3) or hub errors: one clear line
        _error(f"export failed: {type(err).__name__}: {err}")
        return EXIT_FAILED
    print(f"exported iteration {result['iteration']} of {run.metadata.name} to {result['to']} "
          f"({result['files']} files, {result['bytes']} bytes of model)")
    return EXIT_OK


# --- sheepdog export-data ---------------------------------------------------------------------


def cmd_export_data(args: argparse.Namespace) -> int:
    """A run's curated pairs as a Hugging Face dataset (sheepdog/export/data.py)."""
    from sheepdog.export import ExportError
    from sheepdog.export.config import is_remote

    to = args.to if is_remote(args.to) else str(Path(args.to).resolve())
    try:
        from sheepdog.export.data import export_data

        result = export_data(Path(args.run_dir).resolve(), to, include_dropped=args.include_dropped,
                             private=True if args.private else None)
    except ImportError as err:
        _error(f"export-data needs the extra sheepdog[export] (datasets, huggingface_hub): {err}")
        return EXIT_INVALID
    except ExportError as err:
        _error(f"export-data: {err}")
        return EXIT_INVALID
    except Exception as err:  # noqa: BLE001 - disk, S3 or hub errors: one clear line
        _error(f"export-data failed: {type(err).__name__}: {err}")
        return EXIT_FAILED
    dropped = f", {result['dropped']} dropped" if args.include_dropped else ""
    print(f"exported iterations {', '.join(map(str, result['iterations']))}: {result['kept']} kept pairs"
          f"{dropped} to {result['to']} ({result['files']} files)")
    return EXIT_OK


# --- sheepdog operator ------------------------------------------------------------------------


def cmd_operator(operator_args: list[str]) -> int:
    try:
        from sheepdog.kube.operator import main as operator_main
    except ImportError as err:
        _error(f"the operator needs the extra sheepdog[operator] (kopf, urllib3, prometheus-client): {err}")
        return EXIT_INVALID
    return int(operator_main(operator_args) or 0)


# --- parser -----------------------------------------------------------------------------------


def _add_set_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field, e.g. --set synthesis.dataSize=40 (a dotted path into "
                   "spec; the value is read as YAML; repeatable)")


GPU_KINDS = ("h100", "h200", "a100", "a800")  # sheepdog.capacity.GPUS (imported lazily)


def _add_plan_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-config", metavar="FILE", help="the model's config.json (or its directory), for a "
                   "model.base that is a hub id or a path on the cluster's volume")
    p.add_argument("--claim-gib", type=float, metavar="GIB", help="the claim's size: also check the run's "
                   "storage against it (the chart's default claim is 500Gi)")


def _add_cluster_run_args(p: argparse.ArgumentParser) -> None:
    """RUN, its namespace and how to reach the cluster (retry, pull, report)."""
    p.add_argument("run", metavar="RUN", help="the SelfAlignmentRun's name")
    p.add_argument("--namespace", "-n", default="default")
    p.add_argument("--kubeconfig", help="default: KUBECONFIG or ~/.kube/config")
    p.add_argument("--context", help="the kubeconfig context (default: its current one)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sheepdog", description="I-SHEEP iterative self-alignment runs.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run a SelfAlignmentRun on this machine (resumes where it stopped)")
    p.add_argument("run_file", metavar="RUN.yaml")
    p.add_argument("--workdir", help="where the run lives (default runs/<name>); relative seed and model "
                   "paths are looked up here first, then beside the run file")
    p.add_argument("--retry-failed", action="store_true", help="retry the stage that failed the run")
    p.add_argument("--no-plot", action="store_true", help="do not write report.png")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="show every stage's output here too (it is always in i<N>/<stage>.log)")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--stage-cache", metavar="DIR",
                       help="the stage cache's index, shared by the runs that name it: a stage another run "
                       "finished with the same inputs and settings is reused, not run "
                       "(default: .stage-cache beside the workdir)")
    cache.add_argument("--no-stage-cache", action="store_true", help="run every stage (no stage cache)")
    _add_set_option(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sweep", help="run a SelfAlignmentSweep's cells on this machine and print the comparison "
                       "table (resumes where it stopped)")
    p.add_argument("sweep_file", metavar="SWEEP.yaml")
    p.add_argument("--workdir", required=True, help="where the cells' runs, sweep.json, the tables and plots go")
    p.add_argument("--parallel", type=int, default=1, metavar="N", help="cells running at once (default 1)")
    p.add_argument("--no-stage-cache", action="store_true",
                   help="every cell runs all its stages (no stage shared between cells)")
    p.add_argument("--no-plot", action="store_true", help="do not draw the per-axis plots")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("cache", help="manage a local stage cache")
    cache_sub = p.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    p = cache_sub.add_parser("prune", help="remove the stage cache's outputs no workdir links to any more "
                             "(deleting a workdir frees nothing on its own: the outputs live in the cache)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--stage-cache", metavar="DIR", help="the stage cache's directory")
    where.add_argument("--workdir", metavar="DIR", help="a run's workdir (its cache is beside it) or a sweep's "
                       "(its cache is DIR/stage-cache)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p.set_defaults(func=cmd_cache_prune)

    p = sub.add_parser("validate", help="check a run or sweep file (and, with --workdir, its local inputs)")
    p.add_argument("run_file", metavar="RUN.yaml|SWEEP.yaml")
    p.add_argument("--workdir", help="also check the seed file and model as `sheepdog run` would")
    _add_plan_options(p)
    _add_set_option(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", help="per stage: GPUs, memory per rank and whether it fits, tokens and "
                       "GPU-hours per iteration; the storage the run needs (from the model's config.json)")
    p.add_argument("run_file", metavar="RUN.yaml")
    p.add_argument("--output", "-o", choices=("text", "json"), default="text")
    p.add_argument("--gpu", choices=sorted(GPU_KINDS), default="h100",
                   help="whose peak FLOP/s and bandwidth the time estimates use (default h100)")
    p.add_argument("--workdir", help="also look for model.base's config.json here")
    _add_plan_options(p)
    _add_set_option(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("render", help="print the Kubernetes objects a run would create")
    p.add_argument("run_file", metavar="RUN.yaml")
    p.add_argument("--namespace", "-n", default=None)
    p.add_argument("--iteration", type=int, default=1, help="which iteration (default 1)")
    p.add_argument("--commands", action="store_true", help="print the stage commands instead of Jobs")
    _add_set_option(p)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("status", help="print the report of a local run")
    p.add_argument("dir", nargs="?", metavar="DIR", help="the run's workdir")
    p.add_argument("--name", help="a run name: its default workdir runs/<name>")
    p.add_argument("--json", action="store_true", help="print report.json")
    p.add_argument("--prompts", action="store_true", help="print the first prompts each synthesize phase and "
                   "evaluate sent, exactly, and the model that answered (prompts.sample.jsonl)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("retry", help="resume a Failed run on a cluster from the stage that failed")
    _add_cluster_run_args(p)
    p.set_defaults(func=cmd_retry)

    p = sub.add_parser("pull", help="copy a cluster run's directory off its volume to this machine")
    _add_cluster_run_args(p)
    p.add_argument("--to", required=True, metavar="DIR", help="where the run's directory goes")
    p.add_argument("--no-models", action="store_true",
                   help="leave the iterations' models and train checkpoints on the volume")
    p.add_argument("--image", default="busybox:1.37",
                   help="image of the short-lived pod (needs sh, tar, gzip, base64; default busybox:1.37)")
    p.add_argument("--timeout", type=float, default=600, help="seconds the pod may take to start and finish")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("report", help="print and plot the report of a run on a cluster, or a sweep's "
                       "comparison table (RUN names a SelfAlignmentSweep)")
    _add_cluster_run_args(p)
    p.add_argument("--plot", default="report.png", metavar="PATH", help="where to draw the plot (default report.png)")
    p.add_argument("--no-plot", action="store_true", help="do not draw the plot")
    p.add_argument("--json", action="store_true", help="print the report as JSON (the keys of report.json)")
    p.add_argument("--format", choices=("text", "markdown", "csv"), default="text",
                   help="a SelfAlignmentSweep's comparison table as text (default), markdown or csv")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="write a local run's model with a model card to a directory, S3 or the hub")
    p.add_argument("run", metavar="RUN", help="the run's workdir (report.json inside)")
    p.add_argument("--iteration", default="best", help="best (default) or an iteration number")
    p.add_argument("--to", required=True, metavar="DIR|s3://BUCKET/PREFIX|hf://ORG/NAME", help="where the model goes")
    p.add_argument("--dataset", action="append", default=[], metavar="ORG/NAME",
                   help="a hub dataset the model was trained on, for the card (e.g. the run's export-data; repeatable)")
    p.add_argument("--private", action="store_true", help="hf:// only: create the model repository private")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("export-data", help="write a run's curated pairs as a Hugging Face dataset (parquet, "
                       "dataset card, LLaMA-Factory's dataset_info.json)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run's directory (a `sheepdog run` workdir)")
    p.add_argument("--to", required=True, metavar="DIR|s3://BUCKET/PREFIX|hf://ORG/NAME",
                   help="where the dataset goes")
    p.add_argument("--include-dropped", action="store_true",
                   help="also export the pairs curate dropped, with the reason (configs *_dropped)")
    p.add_argument("--private", action="store_true", help="hf:// only: create the dataset repository private")
    p.set_defaults(func=cmd_export_data)

    # Listed for --help only: main() hands everything after `operator` to the operator's own
    # parser untouched (argparse would eat options such as --help on the way).
    sub.add_parser("operator", help="run the Kubernetes operator (sheepdog operator --help)", add_help=False)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["operator"]:
            return cmd_operator(argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except BrokenPipeError:  # `sheepdog status DIR | head`
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
