"""Scaling (planned): workers vs time tables from stored runs."""

from ui.common import placeholder

placeholder("Scaling", "a coming issue", [
    "Workers vs time for data preparation and for training, with threads and with processes (torch.distributed).",
    "Speedup T1/Tn, efficiency (100% at one worker by definition) and the serial fraction (Karp-Flatt).",
])  # fmt: skip
