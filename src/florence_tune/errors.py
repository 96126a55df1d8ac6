"""Errors the command line turns into one clear line instead of a traceback."""


class FlorenceTuneError(Exception):
    """Something went wrong that the user can fix; exits with status 1."""

    exit_code = 1


class UsageError(FlorenceTuneError):
    """The command was given a wrong flag, value or file name; exits with status 2."""

    exit_code = 2
