"""The one error type the steps turn into a one-line message and a FAILED run."""


class PipelineError(ValueError):
    """Bad input or setup the user can fix; the message names the problem and the fix."""
