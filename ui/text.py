"""Untrusted text on a page: labels, file names, dataset and run names, and error messages that quote them.

Streamlit renders Markdown in far more than ``st.markdown``: captions, alerts, toasts, widget labels and tooltips,
metric labels, image captions, expander, tab and progress texts. A label ``![b](http://host/x.png)`` would make
every viewer's browser fetch that address, ``$...$`` would typeset, ``:red[...]`` would colour. Every such text
goes through :func:`plain` before it meets Markdown; select boxes' and multiselects' options are plain text in
Streamlit and are passed as they are (escaping them would show the backslashes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# The characters Markdown (CommonMark, GFM, Streamlit's directives, LaTeX) acts on inside a line; a backslash before
# ASCII punctuation is CommonMark's escape, so the character is shown as itself. An underscore between two letters
# or digits never emphasises ("new_whale" stays as it is), and "&" acts only before an entity ("&lt;").
_ACTIVE = re.compile(r"([\\`*\[\]<>|~$])|(?<![^\W_])_|_(?![^\W_])|&(?=#?\w+;)")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029]+")
# "- x", "---", "# x", "1. x": a list, a rule or a heading when the text starts a block.
_BLOCK_START = re.compile(r"^(\s*)([-+](?=[\s\-+]|$)|#{1,6}(?=\s|$)|\d{1,9}(?=[.)](?:\s|$)))")


def plain(text: object) -> str:
    """``text`` escaped so that Markdown shows it as written, on one line (a line break in a label would start a
    new block); safe inside ``**...**`` and after other Markdown."""
    one_line = _LINE_BREAKS.sub(" ", str(text))
    escaped = _ACTIVE.sub(lambda m: "\\" + m[0], one_line)
    return _BLOCK_START.sub(_escape_marker, escaped, count=1)


def _escape_marker(match: re.Match[str]) -> str:
    space, marker = match[1], match[2]
    return f"{space}{marker}\\" if marker[0].isdigit() else f"{space}\\{marker}"


def plain_list(items: Iterable[object], sep: str = ", ") -> str:
    """Several untrusted texts, each escaped, joined by ``sep``."""
    return sep.join(plain(item) for item in items)
