"""Errors shared across methods and the sweep machinery."""


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the message names the step and what to do (or the last good result)."""
