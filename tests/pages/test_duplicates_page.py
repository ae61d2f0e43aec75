"""AppTest: the Duplicates page on the built-in sample and on a generated dataset with planted copies.

The generated dataset holds every kind of copy once (byte copy, same pixels in two formats, re-encode leaked into
val, resize leaked into test, brightened copy filed under another class, larger copy, a copy filed as "unknown"),
flat pictures that share a hash but are not copies, distinct photos and one broken file. AppTest cannot see
pixels: the tests read metrics, captions, data frames, session state and the files written.
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.common.workspace import Workspace
from core.datasets.sources import DatasetRef, resolve_dataset
from core.dedup.cleaning import plan_cleaning
from core.dedup.groups import DEFAULT_THRESHOLDS, DedupConfig, find_duplicates, group_duplicates
from core.dedup.quality import QualityThresholds, quality_report
from core.dedup.tables import groups_csv
from tests import imagefactory as f
from tests.support import ROOT
from ui.duplicates import leakage, session

PAGE = "app_pages/duplicates.py"
TIMEOUT = 60


def _make_planted(root: Path) -> None:
    t = root / "train"
    f.write_photo(t / "cat/a.jpg", 1, (120, 90))
    shutil.copy(t / "cat/a.jpg", t / "cat/a_copy.jpg")  # byte copy
    (t / "dog").mkdir(parents=True)
    f.photo(2, (100, 100)).save(t / "dog/p.png")
    f.photo(2, (100, 100)).save(t / "dog/p.bmp")  # the same pixels, another format
    f.write_photo(t / "cat/r.jpg", 3, (120, 90))
    f.write_copy(t / "cat/r.jpg", root / "val/cat/r_q60.jpg", quality=60)  # re-encoded, leaked into val
    f.write_photo(t / "bird/s.jpg", 4, (160, 120))
    f.write_copy(t / "bird/s.jpg", root / "test/bird/s_half.png", scale=0.5)  # resized, leaked into test
    f.write_photo(t / "cat/b.jpg", 5, (120, 90))
    f.write_copy(t / "cat/b.jpg", t / "dog/b_bright.jpg", brightness=1.15)  # brightened, filed as a dog
    f.write_photo(t / "cat/d.jpg", 6, (90, 70))
    f.write_copy(t / "cat/d.jpg", t / "cat/e_big.png", scale=2.0)  # larger copy
    f.write_photo(t / "cat/u.jpg", 7, (120, 90))
    (t / "unknown").mkdir(parents=True)
    shutil.copy(t / "cat/u.jpg", t / "unknown/u_again.jpg")  # the same cat, filed as unknown
    for name, colour in {"red": (220, 30, 30), "blue": (30, 30, 220), "gray": (128, 128, 128)}.items():
        f.write_flat(t / f"flat/{name}.png", colour)
    for k in range(12):
        f.write_photo(t / f"{['cat', 'dog', 'bird'][k % 3]}/x{k}.jpg", 100 + k, (110, 80))
    f.write_truncated_jpeg(t / "cat/broken.jpg")


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> DatasetRef:
    root = tmp_path_factory.mktemp("planted") / "planted"
    _make_planted(root)
    return DatasetRef("folder", root, name="planted")


def app() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)


def page_on(ref: DatasetRef | None = None, **state) -> AppTest:
    at = app()
    if ref is not None:
        at.session_state["dataset"] = ref
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def cards(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("**Group ")]


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def tab(at: AppTest, name: str) -> AppTest:
    at.session_state["dup_tab"] = name
    at.run()
    assert not at.exception, at.exception
    assert not [e.value for e in at.error]
    return at


def frame_with(at: AppTest, column: str) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if column in d.value.columns)


def result_of(at: AppTest):
    return at.session_state[session.CURRENT]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------------------------------------------


def test_sample_digits_shows_what_the_engine_finds(fresh_workspace: Path) -> None:
    at = page_on()
    ws = Workspace.open(fresh_workspace)
    engine = find_duplicates(resolve_dataset("sample:digits", ws), ws.cache)  # from the page's cache: quick
    shown = metrics(at)
    assert shown["Images"] == "1,797"
    assert shown["Duplicate groups"] == f"{len(engine.groups):,}"
    assert shown["Redundant images"] == f"{engine.n_redundant:,}"
    assert shown["Split leaks"] == f"{engine.leakage.pairs['path_b'].nunique():,}"
    # the page read every image itself (a fresh workspace): it must not say "the rest from the cache"
    assert any("fingerprints: 1,797 images read (none were cached yet)" in c.value for c in at.caption)
    # the 1,797 handwritten digits are all different drawings: the hashes find close pairs, but none survives the
    # pixel check, so the page says so instead of showing groups (planted copies below show the cards)
    assert engine.groups.empty and len(cards(at)) == 0
    assert any(s.value.startswith("No duplicates") for s in at.success)
    # ...and says where the close pairs went: look-alikes, listed apart and counted nowhere else
    assert len(engine.look_alikes) > 0
    assert any(e.label.startswith(f"{len(engine.look_alikes):,} look-alike pairs: similar pictures, not copies")
               for e in at.expander)  # fmt: skip
    tab(at, "Leakage")
    frame = frame_with(at, "images with a copy")
    assert frame["images with a copy"].tolist() == [engine.leakage.counts[k] for k in ("train-val", "train-test",
                                                                                        "val-test")]  # fmt: skip


def test_planted_copies_conflicts_leaks_and_the_broken_file(planted: DatasetRef) -> None:
    at = page_on(planted)
    assert not [e.value for e in at.error]
    assert metrics(at) == {"Images": "29", "Duplicate groups": "7", "Redundant images": "7", "Label conflicts": "2",
                           "Split leaks": "2", "Unreadable": "1"}  # fmt: skip
    assert at.expander[0].label.startswith("1 file could not be read")
    assert at.expander[0].dataframe[0].value["path"].tolist() == ["train/cat/broken.jpg"]
    assert len(cards(at)) == 7
    text = captions(at)
    assert "· identical" in text  # exact copies
    assert re.search(r"\d+×\d+ · \d+ bits", text)  # near copies, with their distance to the group's first image
    assert "**cat** · train" in text and "**cat** · val" in text and "**bird** · test" in text
    conflict = next(c for c in cards(at) if "b.jpg" in c or "label conflict" in c)
    assert "labels cat, dog" in conflict or "labels cat, unknown" in conflict
    assert at.session_state[session.RESULTS][(planted.spec, "phash")].hashes.n_opened == 29


def test_filters_by_kind_flag_and_class(planted: DatasetRef) -> None:
    at = page_on(planted)
    at.selectbox(key="dup_flag").set_value("Label conflicts").run()
    assert len(cards(at)) == 2 and all("label conflict" in c for c in cards(at))
    at.selectbox(key="dup_flag").set_value("Split leaks").run()
    assert len(cards(at)) == 2 and all("split leak" in c for c in cards(at))
    at.selectbox(key="dup_flag").set_value("All groups").run()
    at.multiselect(key="dup_kind").set_value(["exact"]).run()
    assert len(cards(at)) == 3 and all("exact copies" in c for c in cards(at))
    at.multiselect(key="dup_kind").set_value(["exact", "near"]).run()
    at.multiselect(key="dup_labels").set_value(["bird"]).run()
    assert len(cards(at)) == 1 and "splits train, test" in cards(at)[0]
    at.multiselect(key="dup_kind").set_value([]).run()
    assert not at.exception and any("No group matches" in i.value for i in at.info)


def test_threshold_regroups_without_hashing_again_and_the_method_resets_it(planted: DatasetRef) -> None:
    at = page_on(planted)
    base = at.session_state[session.RESULTS][(planted.spec, "phash")]
    assert at.slider(key="dup_threshold").value == DEFAULT_THRESHOLDS["phash"]
    at.slider(key="dup_threshold").set_value(0).run()
    exact_only = group_duplicates(base.hashes, base.scan, DedupConfig(threshold=0))
    assert metrics(at)["Duplicate groups"] == str(len(exact_only.groups))  # exact copies and pairs at distance 0
    assert 3 <= len(exact_only.groups) < 7
    assert at.session_state[session.VIEW][0] == (planted.spec, "phash", 0)
    assert at.session_state[session.RESULTS][(planted.spec, "phash")] is base  # nothing fingerprinted again
    at.slider(key="dup_threshold").set_value(16).run()
    assert int(metrics(at)["Duplicate groups"]) >= 7
    at.selectbox(key="dup_method").set_value("whash").run()
    assert not at.exception
    assert at.slider(key="dup_threshold").value == DEFAULT_THRESHOLDS["whash"]
    assert result_of(at).config.method == "whash" and metrics(at)["Duplicate groups"] == "7"


def test_a_large_dataset_waits_for_a_click_and_the_choices_survive_other_pages(
    planted: DatasetRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session, "AUTO_LIMIT", 10)  # "large": more images than are searched on arrival
    at = page_on(planted)
    assert not at.metric and any("the first search opens every image once" in i.value for i in at.info)
    at.button(key="dup_run").click().run()
    assert not at.exception and metrics(at)["Duplicate groups"] == "7"
    at.slider(key="dup_threshold").set_value(4).run()
    at.switch_page("app_pages/datasets.py").run()
    at.switch_page(PAGE).run()
    assert at.slider(key="dup_threshold").value == 4 and result_of(at).config.threshold == 4
    at.button(key="dup_again").click().run()  # rescan: unchanged files come from the cache
    assert not at.exception
    assert at.session_state[session.RESULTS][(planted.spec, "phash")].hashes.n_opened == 0


def test_borderline_tab_shows_what_one_bit_more_or_less_changes(planted: DatasetRef) -> None:
    at = page_on(planted)
    largest = int(result_of(at).groups["distance"].max())
    at.slider(key="dup_threshold").set_value(largest - 1).run()  # the farthest verified pair drops out...
    tab(at, "Borderline")
    assert f"At {largest} bits" in metrics(at)
    assert int(metrics(at)[f"At {largest} bits"].lstrip("+").split()[0]) >= 1
    texts = "\n".join(m.value for m in at.markdown)
    assert f"added from {largest} bits" in texts  # ...and is shown as the pair one more bit would add
    table = frame_with(at, "copies on the pixels")
    assert list(table.columns) == ["bits", "candidate pairs", "copies on the pixels", "grouped now"]
    assert table["bits"].between(largest - 3, largest + 1).all()
    assert (table["grouped now"] <= table["copies on the pixels"]).all()


def test_leakage_tab_counts_per_split_pair_with_the_pairs(planted: DatasetRef) -> None:
    at = tab(page_on(planted), "Leakage")
    frame = frame_with(at, "splits")
    assert frame["splits"].tolist() == ["train → val", "train → test", "val → test"]
    assert frame["images with a copy"].tolist() == [1, 1, 0]
    assert "1 val image has a copy in train, 1 test image has a copy in train" in at.warning[0].value
    assert "r_q60.jpg" in captions(at) and "r.jpg" in captions(at)
    at.selectbox(key="dup_leak_pair").set_value("train-test").run()
    assert "s_half.png" in captions(at)


def test_clean_up_previews_then_writes_a_new_current_dataset(
    planted: DatasetRef, fresh_workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUDIO_DATA_ROOTS", str(planted.root))  # the planted set lives outside this test's folder
    before = snapshot(planted.root)
    at = tab(page_on(planted), "Clean up")
    assert metrics(at)["Removed"] == "7" and metrics(at)["Kept"] == "22"  # keep-one by default
    policies = ["prefer-known", "drop-conflicts", "move-leaks", "keep-one"]
    at.multiselect(key="dup_policies").set_value(policies).run()
    expected = plan_cleaning(result_of(at), policies)  # "unknown" is found by itself
    assert expected.unknown_label == "unknown"
    shown = metrics(at)
    assert [shown[k] for k in ("Kept", "Removed", "Relabelled", "Moved")] == [
        str(len(expected.kept)), str(len(expected.removed)), str(len(expected.relabelled)), str(len(expected.moved))]  # fmt: skip
    assert len(expected.relabelled) == 1 and len(expected.moved) == 2
    relabelled = next(d.value for d in at.dataframe if "old" in d.value.columns and "unknown" in set(d.value["old"]))
    assert relabelled.to_dict("records") == [{"path": "train/unknown/u_again.jpg", "old": "unknown", "new": "cat"}]

    at.text_input(key="dup_clean_name").set_value("planted tidy").run()
    at.button(key="dup_write").click().run()
    assert not at.exception, at.exception
    current = at.session_state["dataset"]
    folder = current.labels.parent
    assert current.kind == "csv" and folder.parent == fresh_workspace / "datasets"
    assert folder.name.startswith("planted_tidy-cleaned-") and current.root == planted.root
    written = pd.read_csv(current.labels)
    assert len(written) == len(expected.kept) and "train/unknown/u_again.jpg" not in set(written["image"])
    assert any("It is now the current dataset" in s.value for s in at.success)
    assert {"Look at it on Datasets", "Train on it"} <= {link.proto.label for link in at.get("page_link")}
    assert metrics(at)["Images"] == str(len(expected.kept)) and metrics(at)["Duplicate groups"] == "0"
    assert snapshot(planted.root) == before  # source files untouched

    at.switch_page("app_pages/datasets.py").run()  # the cleaned copy is listed in the browser and opens
    at.expander[0].radio(key="picker_source").set_value("Cleaned datasets").run()
    assert at.dataframe[0].value["name"].tolist() == [folder.name]
    at.button(key="open_cleaned").click().run()
    assert not at.exception and metrics(at)["Images"] == str(len(expected.kept))


def test_prefer_known_with_an_absent_unknown_label_is_an_error_in_words(planted: DatasetRef) -> None:
    at = tab(page_on(planted), "Clean up")
    at.multiselect(key="dup_policies").set_value(["prefer-known"]).run()
    at.text_input(key="dup_unknown").set_value("new_whale").run()
    assert not at.exception and metrics(at)["Relabelled"] == "0"
    at.multiselect(key="dup_policies").set_value([]).run()
    assert not at.exception and "Removed" not in metrics(at)


def test_quality_sliders_move_the_flags(planted: DatasetRef) -> None:
    at = tab(page_on(planted), "Quality")
    table = result_of(at).hashes.table
    default = quality_report(table).counts
    heads = {m.value.split(" · ")[0]: m.value for m in at.markdown if m.value.endswith("flagged")}
    assert heads["**Low information**"] == f"**Low information** · {default['low_information']} flagged"
    assert default["low_information"] >= 3  # the flat pictures
    at.slider(key="q_dark").set_value(255.0).run()
    dark = quality_report(table, QualityThresholds(dark=255.0)).counts["dark"]
    assert dark > default["dark"]
    assert f"**Dark** · {dark} flagged" in [m.value for m in at.markdown]
    assert any("score" in c for c in captions(at).splitlines())
    at.button(key="q_reset").click().run()
    assert at.slider(key="q_dark").value == QualityThresholds().dark
    assert f"**Dark** · {default['dark']} flagged" in [m.value for m in at.markdown]


def test_csv_export_lists_every_image_of_every_group(planted: DatasetRef) -> None:
    at = page_on(planted)
    assert at.get("download_button")[0].label == "Download all groups (CSV)"
    result = result_of(at)
    frame = pd.read_csv(io.StringIO(groups_csv(result.groups, result.members)))  # as dedup --csv writes it
    assert list(frame.columns) == ["group", "kind", "size", "conflict", "leak", "max_distance", "path", "label",
                                   "split", "width", "height"]  # fmt: skip
    assert len(frame) == len(result.members) == 14 and sorted(frame["group"].unique()) == list(range(1, 8))
    assert frame.groupby("group")["size"].first().sum() == 14
    leak = frame[frame["path"] == "val/cat/r_q60.jpg"].iloc[0]
    assert bool(leak["leak"]) and leak["kind"] == "near" and leak["split"] == "val"
    assert set(frame.loc[frame["conflict"], "label"]) == {"cat", "dog", "unknown"}


def test_a_dataset_without_duplicates_says_so(tmp_path: Path) -> None:
    root = tmp_path / "data" / "distinct"
    for k in range(6):
        f.write_photo(root / ["cat", "dog"][k % 2] / f"{k}.jpg", 300 + k)
    at = page_on(DatasetRef("folder", root, name="distinct"))
    assert metrics(at)["Duplicate groups"] == "0" and metrics(at)["Redundant images"] == "0"
    assert any("No duplicates" in s.value for s in at.success)
    tab(at, "Leakage")
    assert any("no train/val/test folders" in i.value for i in at.info)
    tab(at, "Clean up")
    assert at.button(key="dup_write").disabled
    for name in ("Borderline", "Quality"):
        tab(at, name)


def test_a_dataset_without_images_says_so(tmp_path: Path) -> None:
    (tmp_path / "data" / "empty" / "cat").mkdir(parents=True)
    at = page_on(DatasetRef("folder", tmp_path / "data" / "empty", name="empty"))
    assert any("holds no readable images" in i.value for i in at.info)
    assert not at.metric


def test_leakage_notice_reads_the_cached_report_and_never_hashes(planted: DatasetRef, tmp_path: Path) -> None:
    # A tiny app with the Duplicates page and a "score" page that calls leakage_notice.
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "app_pages").symlink_to(ROOT / "app_pages")
    main = tmp_path / "site" / "main.py"
    main.write_text(
        "import streamlit as st\n"
        "from ui.duplicates.leakage import leakage_notice\n"
        "from ui.state import current_ref\n"
        "def score():\n"
        "    leakage_notice(current_ref())\n"
        f"st.navigation([st.Page(score, title='Score', default=True), st.Page({str(ROOT / PAGE)!r})]).run()\n"
    )
    at = AppTest.from_file(str(main), default_timeout=TIMEOUT)
    at.session_state["dataset"] = planted
    at.run()
    assert not at.exception, at.exception
    assert not at.warning  # never fingerprinted: nothing shown, nothing hashed

    page_on(planted)  # fingerprints the dataset (cached on disk in this workspace)
    at = AppTest.from_file(str(main), default_timeout=TIMEOUT)  # a new tab: only the disk cache is shared
    at.session_state["dataset"] = planted
    at.run()
    assert not at.exception, at.exception
    assert at.warning[0].value == ("1 val image has a copy in train, 1 test image has a copy in train: scores on the "
                                   "val and test splits are optimistic.")  # fmt: skip
    assert at.get("page_link")[0].proto.label.startswith("See the copies")


def test_leak_sentence_wording() -> None:
    assert leakage.leak_sentence({"train-val": 0, "train-test": 12, "val-test": 0}) == (
        "12 test images have a copy in train: scores on the test split are optimistic.")  # fmt: skip
    assert leakage.leak_sentence({"train-val": 0, "train-test": 0, "val-test": 0}) == ""
