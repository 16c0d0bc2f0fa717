"""python -m sheepdog_fake_jobs <stage> --config JSON --summary-file PATH

Behaves like a stage program by contract (outputs, _SUCCESS, summary file + last stdout line,
exit code) without a model. Knobs, each a comma list of "<iteration>:<stage>":
  FAKE_FAIL         always fail there (exit 1, summary ok false)
  FAKE_UNFIXABLE    fail there with the exit code of an error no retry can fix (3)
  FAKE_FAIL_ONCE    fail the first attempt there only
  FAKE_KILL_PARENT  SIGKILL the executor there (once), as a user's kill -9 would
  FAKE_NO_SUMMARY   succeed there without writing a summary
  FAKE_CRASH        die there with a traceback and no summary (exit 4)
FAKE_TRAIN_GATE=<path>: a train reports steps 1 and 2 of 4 (progress.json and its stdout line,
as sheepdog_jobs does), then waits until <path> exists (60 s at most) before it goes on.
FAKE_LOG: append one JSON line per invocation. FAKE_METRICS: evaluate values per iteration
(from iteration 1); FAKE_BASELINE: iteration 0's (M_0), default 0.
Sharded (config shard.count > 1): every shard waits until all have started (they must run at
once; exit 5 after 20 s otherwise), reports generated = 10 * iteration split over the shards,
and FAKE_FAIL_SHARD_ONCE=<index> fails that shard's first attempt.
"""

import json
import os
import signal
import sys
import time


def marks(name):
    return {tuple(x.split(":")) for x in os.environ.get(name, "").split(",") if x}


def report_progress(out_dir, gate):
    from sheepdog.progress import PROGRESS_FILE, progress_line

    for step in (1, 2):
        record = {"step": step, "totalSteps": 4, "epoch": step / 4, "etaSeconds": 2.0 * (4 - step)}
        tmp = os.path.join(out_dir, f".{PROGRESS_FILE}.tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(record))
        os.replace(tmp, os.path.join(out_dir, PROGRESS_FILE))
        print(progress_line(record), flush=True)
    deadline = time.monotonic() + 60
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)


def main(argv):
    stage = argv[0]
    config = json.loads(argv[argv.index("--config") + 1])
    summary_file = argv[argv.index("--summary-file") + 1]
    it = config["iteration"]
    here = (str(it), stage)
    out_dir = config["outDir"]
    os.makedirs(out_dir, exist_ok=True)
    iter_dir = os.path.dirname(out_dir)

    if os.environ.get("FAKE_LOG"):
        with open(os.environ["FAKE_LOG"], "a") as log:
            log.write(json.dumps({"iteration": it, "stage": stage, "generator": config["generatorModel"],
                                  "base": config["baseModel"], "trainData": config.get("trainData", []),
                                  "dataSize": config["dataSize"], "seed": config.get("seedFile"),
                                  "modelOut": config["modelOut"],
                                  "shard": config.get("shard"),
                                  "reuseLinks": config.get("reuseLinks", {}),  # the stage cache's
                                  # set by torchrun for each rank of a train of several
                                  "rank": os.environ.get("RANK"), "worldSize": os.environ.get("WORLD_SIZE")}) + "\n")
    shard = config.get("shard") or {}
    count, index = shard.get("count", 1), shard.get("index")
    if count > 1:
        if index is None:
            index = int(os.environ.get("JOB_COMPLETION_INDEX", "0"))
        barrier = os.path.join(iter_dir, f".{stage}.started")
        os.makedirs(barrier, exist_ok=True)
        open(os.path.join(barrier, str(index)), "w").close()
        failed_shard = os.path.join(iter_dir, f".{stage}.shard-{index}.failed_once")
        if os.environ.get("FAKE_FAIL_SHARD_ONCE") == str(index) and not os.path.exists(failed_shard):
            open(failed_shard, "w").close()
            summary = {"stage": stage, "iteration": it, "ok": False, "error": f"shard {index} broke"}
            with open(summary_file, "w") as f:
                f.write(json.dumps(summary))
            return 1
        deadline = time.monotonic() + 20
        while len(os.listdir(barrier)) < count:
            if time.monotonic() > deadline:
                sys.stderr.write(f"shard {index}: the other shards never started\n")
                return 5
            time.sleep(0.05)
    for i in range(3):  # a progress bar on stderr, redrawn with \r as tqdm does
        sys.stderr.write(f"\r{stage}: {i + 1}/3")
        sys.stderr.flush()
    sys.stderr.write("\n")
    if stage == "train" and os.environ.get("LOCAL_RANK", "0") == "0":
        report_progress(out_dir, os.environ.get("FAKE_TRAIN_GATE"))

    once = os.path.join(iter_dir, f".{stage}.killed")
    if here in marks("FAKE_KILL_PARENT") and not os.path.exists(once):
        open(once, "w").close()
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(30)  # the executor's death kills us (PR_SET_PDEATHSIG)
        return 9

    if here in marks("FAKE_CRASH"):
        sys.stderr.write("Traceback (most recent call last):\nValueError: the tokenizer is missing\n")
        return 4

    failed_once = os.path.join(iter_dir, f".{stage}.failed_once")
    unfixable = here in marks("FAKE_UNFIXABLE")
    if unfixable or here in marks("FAKE_FAIL") or (here in marks("FAKE_FAIL_ONCE") and not os.path.exists(failed_once)):
        open(failed_once, "w").close()
        summary = {"stage": stage, "iteration": it, "ok": False, "error": f"boom in iteration {it} {stage}"}
        with open(summary_file, "w") as f:
            f.write(json.dumps(summary))
        sys.stderr.write("Traceback: something broke\n")
        print(json.dumps(summary))
        return 3 if unfixable else 1

    with open(os.path.join(out_dir, "output.txt"), "w") as f:
        f.write(stage)
    if stage == "train":
        os.makedirs(config["modelOut"], exist_ok=True)
        with open(os.path.join(config["modelOut"], "config.json"), "w") as f:
            f.write("{}")
    summary = {"stage": stage, "iteration": it, "ok": True, "skipped": False, "seconds": 0.01}
    if stage == "synthesize":
        summary |= {"generated": 10 * it, "assessed": 9 * it, "parseFailures": it,
                    "meanQuality": 5.0 + it, "meanFollowing": 4.0 + it, "modelLoads": 1, "engine": "fake"}
        if count > 1:  # each shard its part, as sheepdog_jobs reports
            part = lambda total: total // count + (1 if index < total % count else 0)
            summary |= {"generated": part(10 * it), "assessed": part(9 * it), "parseFailures": part(it),
                        "shard": index, "shards": count}
    elif stage == "curate":
        summary |= {"kept": 4 * it, "keepRate": 0.5, "dropped": {"score": 4 * it}}
    elif stage == "train":
        summary |= {"trainLoss": 1.0 / it, "evalLoss": 1.1 / it, "samples": 4 * it, "model": config["modelOut"],
                    "worldSize": int(os.environ.get("WORLD_SIZE", "1"))}
    elif stage == "evaluate":
        values = [float(v) for v in os.environ.get("FAKE_METRICS", "").split(",") if v]
        if it == 0:
            value = float(os.environ.get("FAKE_BASELINE", "0"))
        else:
            value = values[it - 1] if it <= len(values) else 0.1 * it
        summary |= {"evaluation": {"ifeval-smoke.promptStrict": value}}
    with open(os.path.join(out_dir, "_SUCCESS"), "w") as f:
        f.write(json.dumps({"counts": {}, "files": {}}))
    # Under torchrun only local rank 0 writes the summary, as sheepdog_jobs does.
    if here not in marks("FAKE_NO_SUMMARY") and os.environ.get("LOCAL_RANK", "0") == "0":
        with open(summary_file, "w") as f:
            f.write(json.dumps(summary))
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
