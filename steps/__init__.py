"""One thin entry point per MLproject step: parse arguments, call the agnews library, log to MLflow."""


def whole(value: str) -> int:
    """argparse type for counts: MLproject has no int type, so `-P epochs=3.0` must read as 3."""
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"{value} is not a whole number")
    return int(number)
