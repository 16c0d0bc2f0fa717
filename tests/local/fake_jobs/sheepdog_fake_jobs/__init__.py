"""A fake stage program for the local executor's tests (same command line as sheepdog_jobs)."""
