"""Which run to show first: the best completed training run on a dataset, not merely the newest.

After a search, the newest run is often a poor trial; a presenter opening Evaluate or Classify should meet the
best model unless they pick another. "Best" is the test accuracy (the untouched check), the best validation
accuracy for a run without test images, newest first among equals; a run with neither comes last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.store.records import RunRecord
from core.store.runs import RunStore


@dataclass(frozen=True)
class RunScore:
    """A run's score for ranking: the accuracy and which images it was measured on ("test", "val", or "")."""

    run: RunRecord
    accuracy: float | None
    split: str


def score(store: RunStore, run: RunRecord) -> RunScore:
    test = store.latest_metrics(run.run_id).get("test_accuracy")
    if test is not None:
        return RunScore(run, float(test), "test")
    best = store.best_metric(run.run_id, "val_acc")
    return RunScore(run, None if best is None else float(best), "val" if best is not None else "")


def ranked(store: RunStore, runs: Sequence[RunRecord]) -> list[RunScore]:
    """``runs`` best first (see the module's rule); ties and unscored runs newest first."""
    scores = [score(store, r) for r in runs]
    return sorted(scores, key=lambda s: (s.accuracy is not None, s.accuracy or 0.0, s.run.created_at, s.run.run_id),
                  reverse=True)  # fmt: skip


def completed_runs(store: RunStore, dataset: str | None = None) -> list[RunRecord]:
    """Completed training runs, newest first; only those on ``dataset`` (its spec) when given."""
    runs = store.list_runs(status="completed", kind="train")
    return [r for r in runs if dataset is None or r.dataset == dataset]


def best_run(
    store: RunStore, dataset: str | None = None, *, among: Sequence[RunRecord] | None = None
) -> RunRecord | None:
    """The best completed training run on ``dataset`` (every dataset when None), or of ``among`` when given."""
    runs = list(among) if among is not None else completed_runs(store, dataset)
    best = ranked(store, runs)
    return best[0].run if best else None


def best_before(store: RunStore, run: RunRecord) -> RunScore | None:
    """The best completed run on ``run``'s dataset created before it: what a new result is measured against."""
    earlier = [
        r for r in completed_runs(store, run.dataset) if r.created_at < run.created_at and r.run_id != run.run_id
    ]
    best = ranked(store, earlier)
    return best[0] if best and best[0].accuracy is not None else None
