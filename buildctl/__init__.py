"""buildctl: the command-line control plane of a parallel build-agent orchestrator."""

__version__ = "0.1.0"
