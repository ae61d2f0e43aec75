"""``python -m core label-issues DATASET --run RUN``: the images whose label is probably wrong (confident learning
over out-of-sample probabilities: ``core.labels``), ranked, with the label each probably should have.

``--mode quick`` (default) describes every image with the run's network and fits K-fold logistic regression on
that: seconds. ``--mode thorough`` trains the run's settings K times in this process, each fold held out once:
minutes to hours, as K trainings. Both keep their probabilities in the workspace (``cache/labels/``), where
``dedup --apply relabel,drop-suspects`` and the Duplicates page's label tab find them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core.common.workspace import Workspace

HELP = "find images whose label is probably wrong (confident learning over a run's out-of-fold guesses)"
MODES = ("quick", "thorough")
SHOWN = 20  # suspects listed in the text output (--json has them all)


def add_parser(sub: Any, common: Any, dataset_args: Any) -> None:
    p = sub.add_parser("label-issues", help=HELP)
    dataset_args(p)
    p.add_argument("--run", type=int, required=True, metavar="RUN",
                   help="a finished training run: its network describes the images (quick) or its settings train "
                   "the folds (thorough)")  # fmt: skip
    p.add_argument("--mode", choices=MODES, default="quick",
                   help="quick: the run's network + K-fold logistic regression, seconds (default); thorough: K "
                   "trainings with the run's settings, each image judged by a network that never saw it")  # fmt: skip
    p.add_argument("--folds", type=int, default=5, metavar="K", help="folds (default 5)")
    common(p)


def cmd_label_issues(args: argparse.Namespace, ws: Workspace) -> tuple[Any, str]:
    from core.datasets.sources import resolve_dataset
    from core.labels.confident import find_label_issues
    from core.labels.probabilities import save_out_of_sample
    from core.store.runs import RunStore

    store = RunStore(ws.runs_db)
    ref = resolve_dataset(args.dataset, ws, labels=args.labels, images=args.images,
                          metadata=args.metadata, label_key=args.label_key)  # fmt: skip
    if args.mode == "quick":
        from core.labels.quick import quick_out_of_sample

        oos = quick_out_of_sample(ws, store, ref, args.run, args.folds)
        save_out_of_sample(ws, oos)
    else:
        oos = _thorough(ws, store, ref, args.run, args.folds)
    issues = find_label_issues(oos)
    return issues.to_json(), text(issues.to_json())


def _thorough(ws: Workspace, store: Any, ref: Any, run_id: int, folds: int) -> Any:
    """K trainings in this process, waited for; each fold's end said on stderr (stdout holds the result only)."""
    from core.labels.probabilities import LabelIssuesError

    try:
        from core.labels.thorough import thorough_and_wait, thorough_progress
    except ImportError as exc:  # built alongside this command; a tree without it still answers quick
        raise LabelIssuesError("thorough mode is not built yet: use --mode quick") from exc
    said: list[tuple[int, int]] = []

    def on_wait(group: int) -> None:
        done, total, _stopped = thorough_progress(store, group)
        if not said or said[-1] != (done, total):
            said.append((done, total))
            sys.stderr.write(f"label check {group}: {done} of {total} folds trained\n")

    return thorough_and_wait(ws, store, ref, run_id, folds, on_wait=on_wait)


def text(result: dict[str, Any]) -> str:
    """The command's words: how many suspects, the most likely ones, and which classes they mix up."""
    from core.datasets.layouts import one_line

    n, found = result["n_images"], result["n_suspects"]
    share = f" ({found / n:.1%})" if n else ""
    lines = [f"{found} of {n} images{share} probably carry a wrong label ({result['mode']} mode, run "
             f"{result['run']}, {result['folds']} folds)"]  # fmt: skip
    if found:
        lines.append(f"{'rank':>5}  {'given':<14} {'suggested':<14} {'p(given)':>9} {'p(sugg.)':>9}  image")
        lines += [f"{s['rank']:>5}  {one_line(s['given'])[:14]:<14} {one_line(s['suggested'])[:14]:<14} "
                  f"{s['p_given']:>9.1%} {s['p_suggested']:>9.1%}  {one_line(s['image'])}"
                  for s in result["suspects"][:SHOWN]]  # fmt: skip
        if found > SHOWN:
            lines.append(f"  ... and {found - SHOWN} more (--json lists them all)")
        mixed = [f"{one_line(c['class'])} -> " + ", ".join(f"{one_line(k)} {v}" for k, v in c["suggested"].items())
                 for c in result["per_class"] if c["suggested"]]  # fmt: skip
        lines += ["suspects by given label -> suggested label:"] + [f"  {m}" for m in mixed]
    if result["left_out"]:
        lines.append(f"not judged: {len(result['left_out'])}")
        lines += [f"  {one_line(r['path'])}: {r['reason']}" for r in result["left_out"][:SHOWN]]
    return "\n".join(lines)
