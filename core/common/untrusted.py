"""Text that users and files supply, handled where it crosses a boundary: numbers read strictly from a page's
address or a header, and cells written to CSV files that people open in spreadsheets.

Labels, file names and dataset names come from whoever made the dataset. A CSV cell starting with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return is a formula to Excel, LibreOffice and Google Sheets
(``=HYPERLINK("http://...")`` sends data away when clicked, ``=cmd|...`` once ran programs), so every CSV the
studio exports goes through :func:`spreadsheet_safe` (OWASP's advice: a single quote before such a text cell, so
it stays text; numbers, negative ones included, stay numbers). Files the studio reads back itself (a cleaned
copy's ``labels.csv``, ``splits.csv``) are data, not exports, and are written as they are.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")  # ASCII only: what a spreadsheet reads as a number


def whole_number(text: str | None, *, negative: bool = False) -> int | None:
    """``text`` as an int when it is written in ASCII digits ("12", "-3" when ``negative``), else None.

    ``str.isdigit`` is true for "²" and "١٢", which ``int`` refuses or reads as another number: a page address
    or a header is checked here instead, once.
    """
    if text is None or not text.isascii():
        return None
    digits = text[1:] if negative and text.startswith("-") else text
    return int(text) if digits.isdigit() else None


def spreadsheet_cell(value: Any) -> Any:
    """``value`` as a spreadsheet keeps it: a text that a spreadsheet would run as a formula gets a leading single
    quote; numbers, and texts that are plain numbers ("-1", "+2.5"), are left as they are.

    A text that already looks quoted ("'=1") gets one more quote, so :func:`from_spreadsheet` can tell it apart.
    """
    if isinstance(value, str) and _formula(value.lstrip("'")):
        return "'" + value
    return value


def from_spreadsheet(text: str) -> str:
    """The text :func:`spreadsheet_cell` was given, for a file the studio reads back (a table of predictions
    opened as a CSV of labels); any other text unchanged."""
    return text[1:] if text.startswith("'") and _formula(text.lstrip("'")) else text


def _formula(text: str) -> bool:
    return text.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(text)


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` to write as CSV for people: every text cell (and column name) through
    :func:`spreadsheet_cell`; number columns untouched."""
    import pandas as pd

    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or isinstance(out[column].dtype, pd.StringDtype):
            out[column] = out[column].map(spreadsheet_cell)
    out.columns = [spreadsheet_cell(c) for c in out.columns]
    return out


def spreadsheet_csv(frame: pd.DataFrame) -> str:
    """``frame`` as CSV text for people (no index), safe to open in a spreadsheet."""
    return spreadsheet_safe(frame).to_csv(index=False)
