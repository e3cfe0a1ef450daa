"""Typed errors. Each carries a one-line, human-readable message that is safe to show a user."""


class BackdropError(Exception):
    """Base class: str(error) is one line a user can act on."""


class ImageError(BackdropError):
    """An image could not be read or is not acceptable (corrupt, too large, wrong type)."""


class InvalidOptionError(BackdropError, ValueError):
    """A parameter has a value outside what is allowed."""


class MissingWeightsError(BackdropError):
    """A model's files are not on disk (and could not be fetched)."""


class DownloadError(BackdropError):
    """A download failed (network, checksum, interrupted)."""


class CancelledError(BackdropError):
    """The user cancelled a long-running job."""


class OutOfMemoryError(BackdropError):
    """The device ran out of memory even with the lightest settings."""


class HistoryError(BackdropError):
    """The history store could not complete an operation."""
