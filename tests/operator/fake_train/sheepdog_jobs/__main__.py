"""python -m sheepdog_jobs train --config JSON|FILE --summary-file PATH, faked: the progress lines a
train prints (sheepdog.progress, as sheepdog_jobs' StepLog does), steps 1 to 3 of 6, then a
wait until `<outDir>/finish` exists (120 s at most), then step 6 and an ok summary."""

import json
import os
import sys
import time

from sheepdog.progress import progress_line


def main(argv):
    raw = argv[argv.index("--config") + 1]
    if not raw.lstrip().startswith("{"):  # a cluster's mounted config file
        with open(raw, encoding="utf-8") as f:
            raw = f.read()
    config = json.loads(raw)
    summary_file = argv[argv.index("--summary-file") + 1]
    out = config["outDir"]
    os.makedirs(out, exist_ok=True)
    for step in (1, 2, 3):
        print(f"train: step {step}/6", flush=True)
        print(progress_line({"step": step, "totalSteps": 6, "epoch": step / 6, "etaSeconds": 10.0 * (6 - step)}),
              flush=True)
    print("some warning a library printed", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(out, "finish")) and time.monotonic() < deadline:
        time.sleep(0.1)
    print(progress_line({"step": 6, "totalSteps": 6, "epoch": 1.0, "etaSeconds": 0.0}), flush=True)
    summary = {"stage": "train", "iteration": config["iteration"], "ok": True, "skipped": False,
               "seconds": 1.0, "trainLoss": 0.5, "samples": 6}
    with open(summary_file, "w") as f:
        f.write(json.dumps(summary))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
