"""AppTest: the Train page says what the small-data recipe chose for a small set and why (issue 24): the batch, its
rate, the warm-up, the network and its input size, each under its widget; an unticked "automatic" batch starts from
the plan's; too few epochs from scratch are warned about before the start."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.common.workspace import Workspace
from tests import imagefactory as fx
from tests.support import ROOT

TIMEOUT = 120


@pytest.fixture
def colours_96(tmp_path: Path) -> Path:
    """3 colour classes x 30 images of 96 px: 60 training images."""
    return fx.write_small_colour_set(tmp_path / "data" / "colours-96")


def _train_page(folder: Path) -> AppTest:
    from core.datasets.sources import resolve_dataset

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    at = at.switch_page("app_pages/train.py").run()
    at.session_state["dataset"] = resolve_dataset(str(folder), Workspace.open())
    return at.run()


def test_the_train_page_says_why_a_small_set_gets_its_batch_rate_warm_up_and_network(
    colours_96: Path, fresh_workspace: Path
) -> None:
    at = _train_page(colours_96)
    assert not at.exception
    shown = [c.value for c in at.caption]
    expected = [
        "Automatic: 8 images. 60 training images give 8 steps an epoch at 8 (1 step at the recipe's 64)",
        "Automatic: 0.0125. The usual rate for SGD (momentum), 0.1 at 64 images a step, scaled to the batch of 8",
        "Automatic: LeNet (small CNN). 60 training images (under 500), from scratch",
        "Automatic: 32 px. From the images' median side (96 px), scaled down to the largest input LeNet",
        "Automatic. The rate rises over the first quarter of each cycle: 24 steps in the first, at 8 steps an epoch",
    ]
    for words in expected:
        assert any(c.startswith(words) for c in shown), (words, shown)
    at.checkbox(key="train_batch_size_auto").uncheck().run()
    assert at.number_input(key="train_batch_size").value == 8  # unticked: it starts from what automatic chose
    warnings = " ".join(w.value for w in at.warning)
    assert "from random weights" not in warnings


def test_too_few_epochs_from_scratch_are_warned_before_the_start(colours_96: Path, fresh_workspace: Path) -> None:
    at = _train_page(colours_96)
    at.selectbox(key="train_arch").select("mobilenet_v2").run()
    at.checkbox(key="train_epochs_auto").uncheck().run()
    at.number_input(key="train_epochs").set_value(3).run()
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("3 epochs of MobileNetV2 from random weights buy little") for w in warnings), warnings
