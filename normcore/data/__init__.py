"""Tabular data input/output and validation."""

from normcore.data.io import read_table
from normcore.data.validation import ValidationReport, resolve_idps, validate_table

__all__ = ["read_table", "resolve_idps", "validate_table", "ValidationReport"]
