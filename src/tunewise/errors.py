"""User errors: anything a person can fix. The CLI prints these as one line and exits non-zero."""


class TunewiseError(Exception):
    """Base for expected user errors; the message names the problem and the fix."""
