"""AG News specifics: its four classes, the hub id, the original headerless CSV format (class 1-4, title,
description), the documented `text,label` format (ids 0-3), and the corpus' escapes (` #39;`, `\\`), which only
AG News text gets undone. Everything else in the library is task-neutral."""
from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd

from agnews.errors import PipelineError

LABELS = ("World", "Sports", "Business", "Sci/Tech")
DEFAULT_DATA = "hf:fancyzhx/ag_news"
HEADERLESS_COLUMNS = ["cls", "title", "description"]
CLASS_HINT = "class must be 1-4 in the AG News format"
TEXT_LABEL_COLUMNS = frozenset({"text", "label"})  # the documented format; a row_id column may ride along

# The AG corpus lost the "&" of numeric entities ("it #39;s", "US #36;5") and uses "\" for line breaks.
_NUMERIC_ENTITY = re.compile(r"(?:&| )?#(\d{1,5});")
_NAMED_REMNANT = re.compile(r"(?<![&\w])(quot|amp|lt|gt);")  # "quot;" remnants, same loss of "&"
_SPACED_BEFORE = frozenset("\u2018\u201c\u2013\u2014")  # ‘ “ – —


# --- which data is AG News ----------------------------------------------------------------------------------------

def is_text_label_format(columns: object, values: pd.Series) -> bool:
    """The documented AG News `text,label` table: only those columns (and row_id), every label an id 0-3 and each
    of the four present. Only then do integer labels mean World..Sci/Tech; other numbered labels are named by
    their values ("0", "1", ...), since a 0/1 sentiment file is not half of AG News."""
    if not set(map(str, columns)) - {"row_id"} <= TEXT_LABEL_COLUMNS:
        return False
    numbers = pd.to_numeric(values.astype("string").str.strip(), errors="coerce")
    return bool(numbers.notna().all()) and set(numbers.unique()) == set(range(len(LABELS)))


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


# --- the corpus' escapes ------------------------------------------------------------------------------------------

def _entity_char(match: re.Match) -> str:
    number = int(match.group(1))
    if 0x80 <= number <= 0x9F:  # Windows-1252 bytes in the corpus (#146; is ’); 5 of them have no character
        char = bytes([number]).decode("cp1252", errors="ignore")
    elif 0xD800 <= number <= 0xDFFF:  # a lone surrogate cannot be written as UTF-8; as html.unescape does
        char = "\ufffd"
    else:
        char = chr(number)
    # The space stands for the lost "&" ("it #39;s"), but before an opening quote or a dash it is also the
    # usual spacing ("says #147;Hi", "up #151; again"), so it stays there; double spaces collapse later.
    return " " + char if match.group(0).startswith(" ") and char in _SPACED_BEFORE else char


def unescape(text: str) -> str:
    """Undo the AG corpus' escapes: entity remnants (` #39;`, `#145;`, `quot;`, `&amp;`) become their characters,
    backslashes (its line breaks) spaces. Other data keeps its `#`, `&lt;` and `\\` as written."""
    text = _NUMERIC_ENTITY.sub(_entity_char, text)
    text = _NAMED_REMNANT.sub(r"&\1;", text)
    return html.unescape(text).replace("\\", " ")
