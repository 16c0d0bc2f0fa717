"""Names the stage programs share with the operator, owned here so that a stage reads them from
its own package, not from the operator's API models. tests/jobs/test_layers.py checks that
both sides still say the same."""

# The stage programs, in the order of an iteration (`python -m sheepdog_jobs <stage>`).
STAGES = ("synthesize", "curate", "train", "evaluate")

# The environment variable through which the operator hands the evaluation judge's API key
# (from the run's apiKeySecretRef) to the evaluate stage.
JUDGE_API_KEY_ENV = "SHEEPDOG_JUDGE_API_KEY"

# Exit codes of the stage command (docs/design.md, "The stage command"): 0 success, 1 a failure
# a retry may fix, EXIT_UNFIXABLE an error no retry can fix (a config the stage refuses, bad
# seeds, a model without a usable chat template): in a cluster the Job fails at once (its
# podFailurePolicy's FailJob rule) instead of spending its retries.
EXIT_UNFIXABLE = 3
