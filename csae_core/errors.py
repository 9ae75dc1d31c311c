"""The one exception type the CLI and the app turn into a clear message."""


class CSAEError(Exception):
    """A problem the user can fix: the message names the problem and the fix."""
