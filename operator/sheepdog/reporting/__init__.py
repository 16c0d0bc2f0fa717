"""What `sheepdog run`, `sheepdog status` and `sheepdog report` show, for local and cluster runs
alike: neither executor's package (local/, kube/) is imported here, so both can use it."""
