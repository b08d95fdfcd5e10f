"""The errors digitrec raises on bad input; each carries a message a person can act on.

The CLI turns any of them into one line and a non-zero exit, the web API into a 4xx response.
"""


class DigitrecError(Exception):
    """Base of every error that is the input's fault, not a bug."""


class DataError(DigitrecError):
    """A data file or directory is missing, truncated, corrupt or fails its checksum."""


class ModelError(DigitrecError):
    """A weights file or run directory is missing, corrupt or of another architecture."""


class ImageError(DigitrecError):
    """An image cannot be decoded or holds no digit."""


class ConfigError(DigitrecError):
    """An unknown model, recipe, device or an out-of-range setting."""


class TrainingStopped(DigitrecError):
    """Training was asked to stop (Ctrl-C); a checkpoint was saved if the run has a directory."""

    exit_code = 130  # the shell's code for "ended by Ctrl-C"


class TrainingDiverged(DigitrecError):
    """A training step's loss was NaN or infinite: the weights are no longer usable (lower the learning rate)."""


class OutputError(DigitrecError):
    """A file or folder cannot be written: a read-only place, a full disk."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message  # the system's words, e.g. "No space left on device"


class EngineError(DigitrecError):
    """The engine that runs a job cannot start, or its cluster does not answer."""


class StoreError(DigitrecError):
    """The corrections database cannot be used: a folder, locked, read-only, damaged or from a newer digitrec.
    Nothing in it was changed."""


class StoreFull(StoreError):
    """The corrections database holds as many corrections as it may (corrections.MAX_CORRECTIONS)."""


class NoSuchCorrection(StoreError):
    """A correction id that the database does not hold."""
