"""User-facing errors: each carries a one-line message that names the input and the fix.

Scripts catch `LdmUserError` and print its message without a traceback.
"""


class LdmUserError(Exception):
    """Base class for errors caused by what the user passed in (files, flags, configs)."""


class ConfigError(LdmUserError, ValueError):
    """A config or argument value that cannot work."""


class CheckpointError(LdmUserError):
    """A weights file that is missing, unreadable, or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that would import or call something outside the allow-list."""


class TrainingDivergedError(LdmUserError):
    """The loss or the learned vectors became NaN/inf; the last good embedding was kept."""
