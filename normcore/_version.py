"""The package version (one place; normcore/__init__ re-exports it)."""

__version__ = "0.1.0"
