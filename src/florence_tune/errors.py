"""Errors the command line turns into one clear line instead of a traceback."""


class FlorenceTuneError(Exception):
    """Something went wrong that the user can fix; exits with status 1."""

    exit_code = 1
    label = "error"  # the word the command line prints before the message


class UsageError(FlorenceTuneError):
    """The command was given a wrong flag, value or file name; exits with status 2."""

    exit_code = 2


class Stopped(FlorenceTuneError):
    """Training stopped early on request (SIGTERM/SIGINT) after saving a checkpoint; exits with 75.

    75 is EX_TEMPFAIL ("try again later"): the run is unfinished but resumable, so a chained
    ``train && evaluate`` must not go on, and a scheduler can tell it from a crash.
    """

    exit_code = 75
    label = "stopped"
