"""python -m sheepdog_jobs <stage> --config '<StageConfig JSON>' --summary-file PATH"""

import sys

# The guard matters: vLLM spawns its engine process, which re-imports __main__.
if __name__ == "__main__":
    from sheepdog_jobs.cli import main

    sys.exit(main())
