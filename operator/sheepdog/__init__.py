"""sheepdog: run I-SHEEP self-alignment as a Kubernetes-native product."""

__version__ = "0.1.0"
