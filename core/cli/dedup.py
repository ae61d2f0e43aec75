"""``python -m core dedup``: exact and near duplicates, label conflicts, leakage, and (``--apply``) a cleaned copy."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core.common.workspace import Workspace


def add_parser(sub: Any, common: Any, dataset_args: Any) -> None:
    from core.dedup.fingerprints import HASH_METHODS

    p = sub.add_parser("dedup", help="find duplicate and leaking images; --apply writes a cleaned dataset")
    dataset_args(p)
    p.add_argument("--hash", choices=HASH_METHODS, default="phash", help="perceptual hash (default phash)")
    p.add_argument("--threshold", type=int, metavar="N",
                   help="Hamming distance in bits up to which images are near duplicates (default per hash)")  # fmt: skip
    p.add_argument("--no-verify", action="store_true", help="count hash matches without checking pixels")
    p.add_argument("--apply", metavar="POLICY[,POLICY...]",
                   help="write a cleaned dataset: keep-one, prefer-known, drop-conflicts, move-leaks, and, after "
                   "label-issues, relabel and drop-suspects")  # fmt: skip
    p.add_argument("--unknown-label", metavar="L", help="the label meaning 'not identified' (e.g. new_whale)")
    p.add_argument("--name", help="name of the cleaned dataset (default <dataset>-cleaned-<hash>)")
    p.add_argument("--csv", metavar="FILE.csv", help="write every grouped image as a row (group, kind, flags, path, "
                   "label, split, size): the Duplicates page's download, safe to open in a spreadsheet")  # fmt: skip
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: usable cores)")
    common(p)


def cmd_dedup(args: argparse.Namespace, ws: Workspace) -> tuple[Any, str]:
    from core.common.atomic import write_atomic
    from core.datasets.sources import resolve_dataset
    from core.dedup.cleaning import clean_dataset, parse_policies
    from core.dedup.groups import DedupConfig, find_duplicates
    from core.dedup.tables import groups_csv

    ref = resolve_dataset(args.dataset, ws, labels=args.labels, images=args.images,
                          metadata=args.metadata, label_key=args.label_key)  # fmt: skip
    policies = parse_policies(args.apply) if args.apply else None  # bad policy names fail before any hashing
    config = DedupConfig(method=args.hash, threshold=args.threshold, verify=not args.no_verify, workers=args.workers)
    result = find_duplicates(ref, ws.cache, config)
    lines = result.text_lines()
    written = {}
    if args.csv:
        target = Path(args.csv)
        write_atomic(target, groups_csv(result.groups, result.members).encode())
        written["csv"] = str(target)
        lines.append(f"groups CSV: {target}")
    if policies is None:
        return {**result.summary(), **written}, "\n".join(lines)
    fixes = _label_fixes(ws, ref.spec, policies)
    plan, cleaned = clean_dataset(result, policies, ws, unknown_label=args.unknown_label, name=args.name,
                                  label_fixes=fixes)  # fmt: skip
    summary = plan.summary(cleaned)
    lines.append(f"cleaned dataset: {summary['n_images']} images, {len(summary['removed'])} removed, "
                 f"{len(summary['relabelled'])} relabelled, {len(summary['moved'])} moved")  # fmt: skip
    lines.append(f"use it as DATASET: {cleaned.spec}")
    return {**result.summary(cleaned=summary), **written}, "\n".join(lines)


def _label_fixes(ws: Workspace, dataset: str, policies: tuple[str, ...]) -> dict[str, str | None] | None:
    """The stored label check's suspects as decisions, when ``relabel`` or ``drop-suspects`` is asked for."""
    from core.dedup.cleaning import LABEL_POLICIES

    if not any(p in policies for p in LABEL_POLICIES):
        return None
    from core.labels.decisions import automatic_fixes, stored_issues

    issues = stored_issues(ws, dataset)
    return None if issues is None else automatic_fixes(issues, "relabel" in policies, "drop-suspects" in policies)
