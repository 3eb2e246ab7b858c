"""Errors meant for users: each names the input, the value, what is allowed and the fix."""


class RefinerError(Exception):
    """Base of every error this extension raises on purpose; the message is shown to the user."""


class SettingsError(RefinerError, ValueError):
    """An argument from the UI, the API, X/Y/Z or infotext is not acceptable."""


class PlanError(RefinerError):
    """The switch cannot be placed exactly for this sampler or schedule."""


class ConditioningError(RefinerError):
    """The refiner's conditioning cannot be built from the base's, or does not fit the refiner UNet."""


class CheckpointError(RefinerError):
    """A refiner checkpoint is missing, unreadable, corrupt or of a kind that cannot refine SDXL."""
