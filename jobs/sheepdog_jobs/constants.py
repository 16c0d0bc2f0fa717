"""Names the stage programs share with the operator, owned here so that a stage reads them from
its own package, not from the operator's API models. tests/jobs/test_layers.py checks that
both sides still say the same."""

# The stage programs, in the order of an iteration (`python -m sheepdog_jobs <stage>`).
STAGES = ("synthesize", "curate", "train", "evaluate")

# The environment variable through which the operator hands the evaluation judge's API key
# (from the run's apiKeySecretRef) to the evaluate stage.
JUDGE_API_KEY_ENV = "SHEEPDOG_JUDGE_API_KEY"
