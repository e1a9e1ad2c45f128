"""The normalised view (transforms/pii/normalise.py): what it changes, the map back to the
original, and that its cheap checks agree with the exact one."""

import hyperscan
import pytest

from tests.support import adversarial
from tests.support.recall_corpus import make_corpus
from transforms.pii.normalise import TRIGGERS, ViewCheck, needs_view, view_of


@pytest.mark.parametrize(
    ("text", "view"),
    [
        ("jane\uff20example.com", "jane@example.com"),  # full-width at sign
        ("\uff10\uff16\uff11\uff12", "0612"),  # full-width digits
        ("\u0660\u0666\u0661\u0662", "0612"),  # Arabic-Indic digits
        ("4111\u00a01111", "4111 1111"),  # a non-breaking space
        ("4111\u200b1111", "4111 1111"),  # zero-width between digits: a separator
        ("ja\u200bne@x.com", "jane@x.com"),  # ...elsewhere: dropped
        ("536\u201122\u20138141", "536-22-8141"),  # dashes
        ("jane%40example.com", "jane@example.com"),
        ("jane&#64;example.com", "jane@example.com"),
        ("jane&#x40;example.com", "jane@example.com"),
        ("jane&commat;example&period;com", "jane@example.com"),
        ("jane\\u0040example.com", "jane@example.com"),
        ("jane [at] example (DOT) com", "jane@example.com"),
        ("a\U0001d7ce", "a0"),  # a mathematical digit, outside the BMP
        ("x\U000e0041y", "xy"),  # a tag character ("ASCII smuggling")
    ],
)
def test_view_of(text, view):
    assert view_of(text).text == view


@pytest.mark.parametrize(
    "text",
    ["plain ASCII text 4111 1111", "café, Müller, 東京", "100% sure & done", "a\\nb", ""],
)
def test_no_view_when_nothing_changes(text):
    assert view_of(text) is None


def test_spans_map_back_to_the_original_characters():
    text = "mail jane%40exa\u200bmple.com now"
    view = view_of(text)
    start = view.text.index("jane")
    end = start + len("jane@example.com")
    assert view.text[start:end] == "jane@example.com"
    original = view.original_span(start, end)
    assert text[original[0] : original[1]] == "jane%40exa\u200bmple.com"


CHECKED = [
    *(case.text for case in adversarial.cases()),
    *(sample.text for sample in make_corpus(3, 300)),
    "tiret \u2013 dans une phrase",  # a dash between spaces: no view needed
    "2019\u20132020",  # ...between digits: one
    "Mme\u00a0Dupont",
    "emoji 👨\u200d👩\u200d👧 family",  # joiners between emoji: none
]


def test_view_check_agrees_with_needs_view():
    check = ViewCheck(hyperscan)
    assert [check(t) for t in CHECKED] == [needs_view(t) for t in CHECKED]
    assert any(needs_view(t) for t in CHECKED) and not all(needs_view(t) for t in CHECKED)
    assert not needs_view("tiret \u2013 dans une phrase") and needs_view("2019\u20132020")


def test_triggers_find_every_ascii_encoding_the_view_decodes():
    import re

    for text in ("a%40b", "a&#64;b", "a&amp;b", "a\\u0040b", "a\\x40b", "a [at] b", "a(dot)b"):
        assert view_of(text) is not None
        assert any(re.search(t, text) for t in TRIGGERS), text


def test_the_latin1_shortcut_looks_for_every_latin1_character_of_the_map():
    from transforms.pii.normalise import _LATIN1_MAPPED, char_map

    assert sorted(c for c in char_map() if ord(c) < 0x100) == sorted(_LATIN1_MAPPED)
    # The shortcut spells them out: each one, between digits in Latin-1 text, needs a view.
    check = ViewCheck(hyperscan)
    for char in _LATIN1_MAPPED:
        text = f"café 4111{char}1111"
        assert needs_view(text) and check(text), repr(char)
