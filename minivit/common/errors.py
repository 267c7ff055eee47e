"""Exceptions minivit raises for bad input, and for a stop the user asked for.

Every error a user can cause (a wrong file, a bad option, a corrupt image) is a
``MinivitError`` whose message is one line naming the file or option and what is
wrong with it. Command-line tools print that line and exit non-zero, without a
traceback. Ctrl-C and SIGTERM end a command with ``Interrupted``: one line saying what
was kept, exit 130 or 143.
"""

import signal


class MinivitError(Exception):
    """Base class: a problem with the user's input, explained in one line."""


class ConfigError(MinivitError, ValueError):
    """An unknown model name or an inconsistent configuration."""


class CheckpointError(MinivitError):
    """A checkpoint that cannot be read, or that does not fit the model."""


class DownloadError(MinivitError):
    """A checkpoint or dataset that could not be fetched or failed its checksum."""


class DataError(MinivitError):
    """A dataset file, row or image that cannot be read."""


class OutputError(MinivitError):
    """An output file or folder that cannot be written (a file where a folder should be, no permission, disk full)."""


class Interrupted(KeyboardInterrupt):
    """A command stopped by a signal (Ctrl-C is SIGINT; SIGTERM is what schedulers and ``kill`` send): its
    message says what was kept, and the command exits 128 + the signal's number (130, 143), as shells do."""

    def __init__(self, message: str = "interrupted", signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
