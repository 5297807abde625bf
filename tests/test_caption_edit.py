"""Batch caption editing as tags (ldm/data/caption_edit.py): remove / replace / add across a set or a
selection, one-by-one edits, and atomic .txt writes."""

from __future__ import annotations

import pytest

from ldm.data import caption_edit as ce
from ldm.errors import ConfigError

CAPTIONS = {
    "a": "a photo of a star, purple, centered",
    "b": "purple,star  shape",
    "c": "",
    "d": "a photo of a star, blue",
}


def test_split_and_join_tags():
    assert ce.split_tags(" x ,, y   z ,") == ["x", "y z"]
    assert ce.join_tags(["x", "y z"]) == "x, y z"


def test_remove_tag_across_the_set_changes_only_captions_that_held_it():
    changes = ce.remove_tag(CAPTIONS, "purple")
    assert changes == {"a": "a photo of a star, centered", "b": "star shape"}


def test_remove_a_tag_nobody_has_changes_nothing_even_odd_spacing():
    assert ce.remove_tag(CAPTIONS, "green") == {}


def test_replace_tag_keeps_the_order_and_never_duplicates():
    assert ce.replace_tag(CAPTIONS, "purple", "violet") == {
        "a": "a photo of a star, violet, centered",
        "b": "violet, star shape",
    }
    assert ce.replace_tag({"x": "red, purple, red"}, "purple", "red") == {"x": "red"}
    assert ce.replace_tag({"x": "purple, red"}, "purple", "red") == {"x": "red"}


def test_add_tag_front_or_back_to_all_or_a_selection():
    assert ce.add_tag(CAPTIONS, "sks", "front") == {
        "a": "sks, a photo of a star, purple, centered",
        "b": "sks, purple, star shape",
        "c": "sks",
        "d": "sks, a photo of a star, blue",
    }
    assert ce.add_tag(CAPTIONS, "blue", "back", stems=["a", "d"]) == {"a": "a photo of a star, purple, centered, blue"}


def test_selection_limits_every_edit_and_unknown_images_are_refused():
    assert ce.remove_tag(CAPTIONS, "purple", stems=["b"]) == {"b": "star shape"}
    with pytest.raises(ConfigError, match="'zzz' is not in this dataset"):
        ce.remove_tag(CAPTIONS, "purple", stems=["zzz"])


@pytest.mark.parametrize("bad, message", [("", "empty"), ("   ", "empty"), ("a, b", "comma"), ("x" * 3000, "long")])
def test_bad_tags_are_refused_with_the_reason(bad, message):
    with pytest.raises(ConfigError, match=message):
        ce.add_tag(CAPTIONS, bad)
    with pytest.raises(ConfigError, match=message):
        ce.replace_tag(CAPTIONS, "purple", bad)


def test_set_caption_one_by_one():
    assert ce.set_caption(CAPTIONS, "c", "  a new\ncaption ") == {"c": "a new caption"}
    assert ce.set_caption(CAPTIONS, "d", CAPTIONS["d"]) == {}
    with pytest.raises(ConfigError, match="not in this dataset"):
        ce.set_caption(CAPTIONS, "nope", "x")
    with pytest.raises(ConfigError, match="long"):
        ce.set_caption(CAPTIONS, "c", "y" * (ce.MAX_CAPTION_CHARS + 1))


def test_tag_counts_most_common_first():
    counts = dict(ce.tag_counts(CAPTIONS))
    assert counts["purple"] == 2 and counts["a photo of a star"] == 2 and counts["blue"] == 1
    assert ce.tag_counts(CAPTIONS)[0][1] == 2
    assert ce.tag_counts({"x": "t, t"}) == [("t", 1)]  # a tag counts once per caption


def test_read_and_write_captions(tmp_path):
    (tmp_path / "one.txt").write_text("old words\n")
    captions = ce.read_captions(tmp_path, ["one", "two"])
    assert captions == {"one": "old words", "two": ""}
    written = ce.write_captions(tmp_path, ce.add_tag(captions, "sks", "front"))
    assert sorted(p.name for p in written) == ["one.txt", "two.txt"]
    assert (tmp_path / "one.txt").read_text() == "sks, old words\n"
    assert (tmp_path / "two.txt").read_text() == "sks\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.txt", "two.txt"]  # no temp files left


def test_a_caption_file_that_is_not_utf8_is_named(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="bad.txt is not UTF-8"):
        ce.read_captions(tmp_path, ["bad"])
