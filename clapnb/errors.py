"""Errors that the CLI and notebooks show as one clear message (no traceback needed)."""


class ClapnbError(Exception):
    """A problem with the user's input or environment; the message says what to do."""


class InputError(ClapnbError, ValueError):
    """Bad input data or parameters."""
