"""One rule for what class a label value names, whatever the format it came from: a class folder's name, a CSV
cell, a JSON value. Every ``layouts.Entry`` goes through it, so a dataset exported as a CSV and the same dataset as
JSON metadata give the same classes.

The rule:

* text is stripped (any Unicode space) and put in Unicode's composed form (NFC): "Café" typed and "Café" from a
  macOS folder name (decomposed) are one class;
* a decimal number keeps its value, not its spelling: "5.0" and "5.00" are "5", "2.50" is "2.5", "-0.0" is "0".
  JSON writers differ in writing a count as 5 or 5.0 and spreadsheets in writing "5" or "5.0"; the class is five;
* whole numbers as written otherwise: "007" stays "007" (a class code, not a count);
* JSON numbers are written the same way (5.0 -> "5", 2.5 -> "2.5"); JSON booleans as JSON spells them ("true").
"""

from __future__ import annotations

import functools
import re
import unicodedata

_DECIMAL = re.compile(r"(-?)(\d+)\.(\d+)")


def label_text(value: object) -> str:
    """The class name ``value`` stands for (``""``, no label, stays ``""``).

    Text is looked up in a cache, so a class's images share one string (a listing of 200,000 images holds a few
    class names, not 200,000 copies of them).
    """
    return _text_label(value) if type(value) is str else _label_text(value)


@functools.lru_cache(maxsize=4096)
def _text_label(value: str) -> str:
    return _label_text(value)


def _label_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = unicodedata.normalize("NFC", str(value)).strip()
    match = _DECIMAL.fullmatch(text)
    if match is None:
        return text
    sign, whole, fraction = match.groups()
    fraction = fraction.rstrip("0")
    number = f"{whole}.{fraction}" if fraction else whole
    return "0" if set(number) <= {"0", "."} else sign + number
