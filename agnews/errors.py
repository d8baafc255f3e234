"""The one error type the steps turn into a one-line message and a FAILED run."""


class PipelineError(ValueError):
    """Bad input or setup the user can fix; the message names the problem and the fix."""


def cause(exc: BaseException) -> str:
    """'Type: first line' of an exception, short enough to keep the real cause in a one-line error."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
