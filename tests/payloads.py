"""A CSV dataset whose labels, file names and folder name are hostile text: Markdown that would make a viewer's
browser fetch a URL, raw HTML, LaTeX, Streamlit's colour directive, and spreadsheet formulas.

Real images (``tests/imagefactory.py``): one colour per class in train/val/test (a ``split`` column), plus a red
test picture filed under another class (so every model makes a mistake on it) that is an exact copy of a red
training picture (so the Duplicates page shows a group with a label conflict), and a validation picture of the
``FORMULA`` class that is an exact copy of one of its training pictures (a group whose label is a formula). Used
by the page tests and the CSV tests of issue 22.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from tests import imagefactory as fx

BEACON = "![b](http://127.0.0.1:9/beacon.png)"  # a Markdown image: every viewer's browser would fetch it
HTML = "<img src=x onerror=alert(1)>"
FORMULA = '=HYPERLINK("http://127.0.0.1:9/x","y")'
AT_FORMULA = "@SUM(1+1) $x^2$ :red[z]"  # a formula for spreadsheets, LaTeX and a colour directive for Streamlit
MINUS = "-1"  # a negative number: a spreadsheet reads it as a number, never a formula; it stays as it is
LABELS = {BEACON: (220, 30, 30), HTML: (30, 200, 40), FORMULA: (30, 40, 220), AT_FORMULA: (230, 230, 40),
          MINUS: (128, 128, 128)}  # fmt: skip
SPLITS = {"train": 8, "val": 3, "test": 3}
FOLDER = "@![d](beacon)"  # the dataset's folder: its name is the dataset's title (Markdown, and a formula)
CSV_NAME = "=labels.csv"
ODD_FILE = "![f](beacon) =1+2.png"  # the mislabelled test picture: a Markdown image and a formula in its name
COPY_OF = "train/r0.png"  # ... an exact copy of this red training picture, filed under HTML
FORMULA_COPY = ("train/b0.png", "val/b0.png")  # the second picture is the first's bytes, both filed under FORMULA

# Markdown that would act when rendered: an image or link, raw HTML, unless its opening character is escaped.
ACTIVE = re.compile(r"(?<!\\)!\[|(?<!\\)\]\(|(?<!\\)<img|(?<!\\)\$x|(?<!\\):red\[")


def payload_csv(parent: Path) -> Path:
    """``parent/<FOLDER>/<CSV_NAME>`` (image,label,split) and its images; returns the CSV's path."""
    root = parent / FOLDER
    rows = []
    for c, (label, colour) in enumerate(LABELS.items()):
        for offset, (split, n) in enumerate(SPLITS.items()):
            for i in range(n):
                name = f"{split}/{'rgbyk'[c]}{i}.png"
                fx.write_rgb(root / name, size=(12, 12), color=colour, seed=100 * offset + i)
                rows.append((name, label, split))
    odd = f"test/{ODD_FILE}"
    (root / odd).write_bytes((root / COPY_OF).read_bytes())
    (root / FORMULA_COPY[1]).write_bytes((root / FORMULA_COPY[0]).read_bytes())
    rows.append((odd, HTML, "test"))
    with open(root / CSV_NAME, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["image", "label", "split"])
        writer.writerows(rows)
    return root / CSV_NAME


def active_markdown(texts: list[str]) -> list[str]:
    """The texts that hold Markdown or HTML from the payloads that a browser would act on."""
    return [t for t in texts if ACTIVE.search(t)]
