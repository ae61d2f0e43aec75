"""Evaluate (planned): accuracy, top-k, precision/recall/F1, confusion matrix, most confident mistakes."""

from ui.common import placeholder

placeholder("Evaluate", "a coming issue", [
    "Accuracy, top-k accuracy, precision, recall and F1 per class, MAP@5.",
    "A confusion matrix you can click to see the images behind a cell.",
    "The most confidently wrong images, and the duplicate-leakage report next to every score.",
])  # fmt: skip
