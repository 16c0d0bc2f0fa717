"""A stand-in for the stage programs in one cluster test (test_train_progress_pod.py): a pod's
PYTHONPATH (the run's stages.train.podTemplate.env) puts it before the real sheepdog_jobs, so
the Job's own command, `python -m sheepdog_jobs train --config ...`, runs it."""
