"""The one exception type that means "the user gave bad input"."""


class UsageError(Exception):
    """Bad input. The message is one line that names the fix; the CLI prints it and exits 2."""
