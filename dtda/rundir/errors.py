"""The one error type of run directories."""


class RunDirError(RuntimeError):
    """The directory cannot be used (made for another configuration, not a run, in use, not
    writable, or an input that cannot be recomputed has changed)."""
