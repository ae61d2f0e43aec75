"""One choice check for every "must be one of" error: the error carries the field, the value and the allowed values,
so a page words it from those, never from the message text."""

from __future__ import annotations

import pytest

from core.common.errors import ChoiceError, CoreError, check_choice


def test_a_bad_choice_carries_its_field_value_and_allowed_values():
    with pytest.raises(ChoiceError) as caught:
        check_choice("optimizer", "sdg", ("sgd", "adam"))
    assert (caught.value.field, caught.value.value, caught.value.allowed) == ("optimizer", "sdg", ("sgd", "adam"))
    assert str(caught.value) == "optimizer 'sdg': choose one of sgd, adam"
    assert isinstance(caught.value, CoreError)  # the command line's one-line error, the page's st.error


def test_an_allowed_choice_passes():
    check_choice("split", "val", ("test", "val"))


def test_no_page_recognises_an_error_by_its_message() -> None:
    """Pages branch on an error's type and fields (``ChoiceError``, ``EmptySplitError``), never on its words."""
    import re

    from tests.support import ROOT

    reading = re.compile(r"""["'][^"']+["'] in str\(\w+\)|re\.\w+\(.*str\((exc|e|error)\)""")
    found = [f"{p.relative_to(ROOT)}:{n}" for folder in ("ui", "app_pages") for p in sorted((ROOT / folder).rglob("*.py"))
             for n, line in enumerate(p.read_text().splitlines(), 1) if reading.search(line)]  # fmt: skip
    assert found == []


def test_a_page_words_a_bad_choice_from_its_fields() -> None:
    from ui.common import error_words

    words = error_words(ChoiceError("augment", "mirror", ("none", "flip", "crop-flip")))
    assert words == "Augmentation: “mirror” is not one of the choices (None, Flips, Shifts and flips)"
    assert error_words(CoreError("plain words")) == "plain words"


def test_a_domain_keeps_its_own_error_type_for_a_bad_choice(tmp_path) -> None:
    from core.common.errors import RunStoreError
    from core.store.runs import RunStore

    with pytest.raises(RunStoreError) as caught:
        RunStore(tmp_path / "runs.sqlite").list_runs(status="done")
    assert (
        isinstance(caught.value, ChoiceError) and caught.value.field == "status" and "crashed" in caught.value.allowed
    )
