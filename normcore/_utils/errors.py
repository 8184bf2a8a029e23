"""Errors with user-facing messages (naming the file, column and problem)."""


class InputError(ValueError):
    """Bad user input: the message is meant to be shown as is, in one line."""
