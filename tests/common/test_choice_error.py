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
