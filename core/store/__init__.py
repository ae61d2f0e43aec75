"""The run store: SQLite (WAL) records of runs, their parameters, metrics and artifacts, and whether the
thread or process that owns a run still lives.

May import: core.common. Light: importing the store never imports torch.
"""
