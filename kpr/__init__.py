"""The ``kpr`` application: command line, demo, wiring and local services."""

__version__ = "0.1.0"

__all__ = ["__version__"]
