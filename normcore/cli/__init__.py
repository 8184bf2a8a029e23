"""The command line, one thin layer over both halves: ``python -m normcore COMMAND ...``.

Tabular commands are in :mod:`.main`, imaging commands in :mod:`.imaging`, value parsers in
:mod:`.arguments`. Commands, flags and output columns are a stable public contract.
"""

from normcore.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
