"""The report to hand over: one self-contained HTML file (no script, no link, no server) with the metrics and their
sentences, the leakage-honest score, the confusion matrix, the per-class table, the most confused classes, the
most confidently wrong images with their heat maps (PNG inlined as base64), the reliability diagram (inline
SVG), the run's settings and a summary of its dataset. Written by the page's download button and by
``python -m core evaluate --report F.html``.
"""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core.common.atomic import write_atomic
from core.common.words import SPLITS, choice_word, class_column, duration, metric_technical, metric_word, split_word
from core.datasets.sources import dataset_title
from core.evaluate import words as w
from core.evaluate.evaluation import Evaluation
from core.evaluate.metrics import confused_pairs, confusion_view, worst_classes
from core.evaluate.mistakes import Explained, enlarged, overlay_of
from core.evaluate.svg import reliability_svg
from core.explain.words import describe_layer
from core.train.archs import arch_label
from core.train.config import label_of

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;border-radius:8px;padding:10px 14px;
width:235px}.card b{font-size:1.6em;display:block}.card p{margin:.3em 0 0;font-size:.9em;color:#444}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5em .8em;margin:.6em 0}
.leak{background:#eef4fb;border-left:4px solid #4C78A8;padding:.6em .9em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.cm td{min-width:2.2em;text-align:center}
.imgs{display:flex;flex-wrap:wrap;gap:14px}.img{width:330px;font-size:.9em}.img img{width:160px;
image-rendering:auto}.small{color:#666;font-size:.85em}
"""
SETTINGS = ("optimizer", "lr", "batch_size", "schedule", "augment", "label_smoothing", "freeze", "seed")


def build_report(ev: Evaluation, explained: list[Explained], settings: list[tuple[str, str]]) -> str:
    """The whole report as one HTML string."""
    m = ev.metrics
    name = dataset_title(ev.run.dataset)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Evaluation of run "
             f"{ev.run.run_id}</title><style>{STYLE}</style></head><body>",
             f"<h1>How good is run {ev.run.run_id}? {_e(arch_label(ev.run.arch))} on {_e(name)}</h1>",
             f"<p class='small'>Measured on the {m.n:,} {split_word(ev.split)} images the model "
             f"never trained on, {m.n_classes} classes. Report made {time.strftime('%Y-%m-%d %H:%M')}.</p>"]  # fmt: skip
    leaking = set(ev.leaks.leaking) if ev.leaks is not None else set()
    parts += [_cards(ev), _leakage(ev), _confusion(ev), _classes(ev), _worst(explained, leaking),
              "<h2>Can its confidence be trusted?</h2>", f"<p>{_e(w.calibration_sentence(m.calibration))}</p>",
              reliability_svg(m.calibration), _settings(settings), _dataset(ev), "</body></html>"]  # fmt: skip
    return "".join(parts)


def write_report(path: Path, text: str) -> Path:
    write_atomic(Path(path), text.encode("utf-8"))
    return Path(path)


def _e(text: object) -> str:
    return html.escape(str(text))


def _card(value: str, metric: str, sentence: str, warning: str = "", k: int = 5) -> str:
    """A score card: the plain name the page shows (``metric_word``), the number, one sentence, and the technical
    name in small print for a reader who knows it."""
    warn = f"<p class='warn'>{_e(warning)}</p>" if warning else ""
    title, tech = metric_word(metric, k=k), metric_technical(metric, k=k)
    return (f"<div class='card'>{_e(title)}<b>{_e(value)}</b><p>{_e(sentence)}</p>{warn}"
            f"<p class='small'>{_e(tech)}</p></div>")  # fmt: skip


def _cards(ev: Evaluation) -> str:
    m = ev.metrics
    cards = [_card(w.pct(m.accuracy, 1), "accuracy", w.score_sentence(m, ev.split),
                   w.few_images_warning(m.n, m.accuracy)),
             _card(w.pct(m.top_k_accuracy, 1), "top_k_accuracy", w.top_k_sentence(m.top_k_accuracy, m.n, m.top_k),
                   k=m.top_k),
             _card(f"{m.map5:.3f}", "map5", w.map5_sentence(m.map5)),
             _card(f"{m.macro['f1']:.3f}", "macro_f1", w.f1_sentence(m.macro["f1"], m.n_classes)),
             _card(f"{m.log_loss:.3f}", "log_loss", w.log_loss_sentence(m.log_loss, m.n_classes)),
             _card(w.pct(m.calibration.ece, 1), "ece", w.calibration_sentence(m.calibration))]  # fmt: skip
    macro = (f"<p class='small'>Macro precision {m.macro['precision']:.3f}, recall {m.macro['recall']:.3f}; "
             f"weighted by class size: precision {m.weighted['precision']:.3f}, recall {m.weighted['recall']:.3f}, "
             f"F1 {m.weighted['f1']:.3f}.</p>")  # fmt: skip
    return "<h2>The scores</h2><div class='cards'>" + "".join(cards) + "</div>" + macro


def _leakage(ev: Evaluation) -> str:
    head = "<h2>Copies of training images in the test</h2>"
    if ev.root is None:
        return head + f"<p>Not checked: {_e(ev.root_problem)}</p>"
    if ev.honest is None:
        return head + "<p>Not checked when this report was made.</p>"
    h = ev.honest
    table = (f"<table><tr><th class='l'></th><th>images</th><th>{_e(metric_word('accuracy'))}</th><th>{_e(metric_word('map5'))}</th></tr>"
             f"<tr><td class='l'>all {split_word(ev.split)} images</td><td>{h.n_all:,}</td>"
             f"<td>{w.pct(h.accuracy_all, 1)}</td><td>{h.map5_all:.3f}</td></tr>"
             f"<tr><td class='l'>without a copy in train</td><td>{h.n_clean:,}</td><td>{w.pct(h.accuracy_clean, 1)}"
             f"</td><td>{'n/a' if h.map5_clean is None else f'{h.map5_clean:.3f}'}</td></tr></table>")  # fmt: skip
    warn = w.few_images_warning(h.n_clean, h.accuracy_clean) if h.n_leaking else ""
    return (
        head
        + f"<div class='leak'><p>{_e(w.leakage_sentence(h, ev.split))}</p>{table}"
        + (f"<p class='warn'>{_e(warn)}</p>" if warn else "")
        + "</div>"
    )


def _confusion(ev: Evaluation) -> str:
    labels, matrix = confusion_view(ev.metrics)
    totals = np.maximum(matrix.sum(1, keepdims=True), 1)
    head = "".join(f"<th>{_e(label)}</th>" for label in labels)
    rows = []
    for i, label in enumerate(labels):
        cells = "".join(_cm_cell(int(v), float(v / totals[i, 0]), i == j) for j, v in enumerate(matrix[i]))
        rows.append(f"<tr><th class='l'>{_e(label)}</th>{cells}</tr>")
    cut = len(labels) < ev.metrics.n_classes
    note = (f"<p class='small'>The {len(labels)} classes in the most mistakes, of {ev.metrics.n_classes}.</p>"
            if cut else "")  # fmt: skip
    return ("<h2>Confusion matrix</h2><p>Rows: the true class; columns: what the model said. The diagonal holds the "
            f"right answers.</p>{note}<table class='cm'><tr><th class='l'>true \\ said</th>{head}</tr>"
            + "".join(rows) + "</table>")  # fmt: skip


def _cm_cell(count: int, share: float, diagonal: bool) -> str:
    hue = "76,120,168" if diagonal else "228,87,86"
    colour = f"rgba({hue},{0.08 + 0.8 * share:.2f})" if count else "#fff"
    return f"<td style='background:{colour}'>{count or ''}</td>"


def _classes(ev: Evaluation) -> str:
    table = worst_classes(ev.metrics).head(50)
    rows = "".join(
        f"<tr><td class='l'>{_e(r.label)}</td><td>{int(r.support)}</td><td>{int(r.correct)}</td><td>{w.pct(r.accuracy)}</td>"
        f"<td>{r.precision:.2f}</td><td>{r.recall:.2f}</td><td>{r.f1:.2f}</td>"
        f"<td class='l'>{_e(r.confused_with) if r.confused_with else ''}"
        f"{f' ({int(r.confused_count)})' if r.confused_with else ''}</td></tr>"
        for r in table.itertuples()
    )
    pairs = confused_pairs(ev.metrics)
    pair_rows = "".join(f"<li>{int(p.count)} {_e(p.true)} image{'s' if p.count != 1 else ''} called {_e(p.predicted)} "
                        f"({w.pct(p.share)} of class {_e(p.true)})</li>" for p in pairs.itertuples())  # fmt: skip
    left = ("label", "confused_with")  # text columns, aligned left
    heads = "".join(_th(class_column(k, ev.split), k in left) for k in (*left[:1], "support", "correct", "accuracy", "precision",
                                                                        "recall", "f1", left[1]))  # fmt: skip
    return (f"<h2>Class by class, worst first</h2><table><tr>{heads}</tr>"
            f"{rows}</table><h2>The classes most often confused</h2>"
            + (f"<ul>{pair_rows}</ul>" if pair_rows else "<p>No mistakes.</p>"))  # fmt: skip


def _th(title: str, left: bool) -> str:
    return f"<th class='l'>{_e(title)}</th>" if left else f"<th>{_e(title)}</th>"


def _png(picture: Image.Image | None) -> str:
    if picture is None:
        return ""
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="PNG")
    return f"<img alt='' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def _worst(explained: list[Explained], leaking: set[str]) -> str:
    head = ("<h2>The most confidently wrong images</h2><p>Each with where the model looked for the class it "
            "chose (red: most evidence).</p>")  # fmt: skip
    if not explained:
        return head + "<p>No mistakes to show.</p>"
    cells = []
    for item in explained:
        pictures = (_png(enlarged(item.picture)) + " " + _png(enlarged(overlay_of(item)))) if item.picture else ""
        note = f"<p class='small'>{_e(item.note)}</p>" if item.note else ""
        if item.image in leaking:
            note += "<p class='small'>This image has a copy among the training images.</p>"
        cells.append(f"<div class='img'>{pictures}<p>True: <b>{_e(item.label)}</b>; the model said "
                     f"<b>{_e(item.predicted)}</b> ({w.pct(item.p_predicted)} sure; {w.pct(item.p_true, 1)} on the "
                     f"true class).</p><p class='small'>{_e(item.image)}</p>{note}</div>")  # fmt: skip
    layer = next((i for i in explained if i.layer), None)
    caption = ""
    if layer is not None:
        caption = f"<p class='small'>{_e(describe_layer(layer.layer, layer.map_size, layer.input_size))}</p>"
    return head + caption + "<div class='imgs'>" + "".join(cells) + "</div>"


def _settings(settings: list[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><td class='l'>{_e(k)}</td><td class='l'>{_e(v)}</td></tr>" for k, v in settings)
    return f"<h2>How the model was trained</h2><table>{rows}</table>"


def _dataset(ev: Evaluation) -> str:
    counts = ev.splits.pivot_table(index="label", columns="split", values="path", aggfunc="count", fill_value=0)
    counts = counts.reindex(columns=[s for s in SPLITS if s in counts.columns])
    total = ev.split_counts()
    head = "".join(f"<th>{_e(split_word(s))}</th>" for s in counts.columns)
    rows = "".join(f"<tr><td class='l'>{_e(label)}</td>" + "".join(f"<td>{int(v)}</td>" for v in row) + "</tr>"
                   for label, row in counts.head(50).iterrows())  # fmt: skip
    more = f"<p class='small'>First 50 of {len(counts)} classes.</p>" if len(counts) > 50 else ""
    summary = ", ".join(f"{total.get(s, 0):,} {split_word(s)}" for s in SPLITS)
    return (
        f"<h2>The data</h2><p>{_e(dataset_title(ev.run.dataset))}: {sum(total.values()):,} images in "
        f"{len(counts)} classes ({summary}).</p><table><tr><th class='l'>class</th>{head}</tr>{rows}</table>{more}"
    )


def report_for(ws, store, ev: Evaluation, explained: list[Explained] | None = None) -> str:
    """The report of ``ev``: heat maps of its worst images (unless given) and the settings from its best checkpoint."""
    from core.common.errors import CoreError
    from core.evaluate.mistakes import explain_rows, unexplained, worst_images
    from core.train.run_folder import checkpoint_path

    if explained is None:
        worst = worst_images(ev.frame)
        try:
            explained = explain_rows(ws, store, ev, worst)
        except CoreError as exc:
            explained = unexplained(worst, f"No heat map: {exc}")
    config = settings_from_checkpoint(checkpoint_path(ws, ev.run.run_id, "best"))
    return build_report(ev, explained, run_settings(ev.run, config, ev.predictions.meta.get("epoch")))


def run_settings(run, checkpoint_config: dict | None, epoch: int | None) -> list[tuple[str, str]]:
    """The run's settings in words, named and worded as the Train page names them (the resolved config from its
    best checkpoint when given)."""
    config = checkpoint_config or run.config
    weights = str(config.get("weights", "none"))
    size = config.get("image_size")
    rows = [(label_of("arch"), arch_label(run.arch or config.get("arch"))),
            (label_of("weights"), choice_word("weights", weights) if weights in ("none", "imagenet") else
             "a weights file"),
            (label_of("image_size"), f"{size} px" if size else "chosen from the images")]  # fmt: skip
    rows += [(label_of(key), choice_word(key, config[key])) for key in SETTINGS if key in config]
    if epoch:
        rows.append(("Epoch of the saved model (best on validation)", str(epoch)))
    if run.wall_s:
        rows.append(("Training time", duration(run.wall_s)))
    return rows


def settings_from_checkpoint(path: Path) -> dict | None:
    """The settings the run's plan decided, as the checkpoint carries it, or None when it cannot be read."""
    from core.common.errors import CoreError
    from core.train.checkpoints import load_checkpoint

    try:
        return load_checkpoint(path).plan.settings.to_dict()
    except CoreError:
        return None


def frame_of_settings(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["Setting", "Value"])
