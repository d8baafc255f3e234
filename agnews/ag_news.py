"""AG News specifics: its four classes, the hub id, and the original headerless CSV format (class 1-4, title,
description), which predates `text,label` files and needs its own reading."""
from __future__ import annotations

import numpy as np
import pandas as pd

from agnews.errors import PipelineError

LABELS = ("World", "Sports", "Business", "Sci/Tech")
DEFAULT_DATA = "hf:fancyzhx/ag_news"
HEADERLESS_COLUMNS = ["cls", "title", "description"]
CLASS_HINT = "class must be 1-4 in the AG News format"


def headerless_frame(raw: pd.DataFrame, source: object, labels: tuple[str, ...] = LABELS) -> pd.DataFrame:
    """`text` (title and description) and `label` (class 1-4 as id 0-3) from the headerless rows; the class is
    checked here so the error shows the value as the file has it."""
    if len(labels) != len(LABELS):
        raise PipelineError(f"{source} is in the AG News format (4 classes) but -P labels names {len(labels)}; "
                            "pass 4 names in class order, or leave labels empty")
    ids = pd.to_numeric(raw["cls"], errors="coerce") - 1
    bad = np.flatnonzero(~ids.isin(range(len(LABELS))))
    if len(bad):
        raise PipelineError(f"{source} row {bad[0] + 1} has unknown label '{raw['cls'].iloc[bad[0]]}'; "
                            f"{CLASS_HINT} ({', '.join(labels)})")
    return pd.DataFrame({"text": raw["title"] + " " + raw["description"], "label": ids})
