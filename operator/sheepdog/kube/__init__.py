"""The Kubernetes executor: Job manifests (jobs), Pod Security checks (podsecurity), the
manifests a run would create (render), and the Kopf operator around them.

Importing this package pulls in nothing heavy: each module imports what it needs.
"""
