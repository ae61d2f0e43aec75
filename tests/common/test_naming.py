"""core.common.naming: labels in the order people read them."""

from core.common.naming import natural_key, natural_sorted


def test_numbers_sort_by_value_not_by_text() -> None:
    assert natural_sorted(["10", "2", "1"]) == ["1", "2", "10"]


def test_mixed_names_sort_by_their_number_parts_and_ignore_case() -> None:
    assert natural_sorted(["class_10", "Class_9", "class_1"]) == ["class_1", "Class_9", "class_10"]


def test_natural_key_keeps_distinct_labels_distinct() -> None:
    assert natural_key("a2") != natural_key("a10")
    assert natural_key("new_whale") < natural_key("w_1")
