"""The 21 classes and the label mappings, checked against the paper and the shared metadata."""

from __future__ import annotations

import re

import pytest

from clapnb import taxonomy
from clapnb.errors import InputError

# Table 1 of Artuso et al. (2025), typed from ../shared/paper (column by column).
PAPER_TABLE_1 = {
    "Airplane", "Bells", "Birds", "Cats", "Chicken coop", "Cicadas and crickets", "Clacson",
    "Crows and seagulls", "Dogs", "Glass breaking", "Helicopter", "Lawn mower and brush cutter",
    "Music", "Sirens and alarms", "Thunder, fireworks and gunshot", "Train",
    "Vacuum cleaner, fan and hairdryer", "Vehicle idling", "Vehicle pass-by", "Voices", "Workshop",
}


def test_classes_are_the_papers_21():
    assert len(taxonomy.CLASSES) == 21
    assert {c.name for c in taxonomy.CLASSES} == PAPER_TABLE_1
    assert len(set(taxonomy.SLUGS)) == 21
    assert all(re.fullmatch(r"[a-z][a-z_]*", s) for s in taxonomy.SLUGS)
    assert all(c.prompt.strip() for c in taxonomy.CLASSES)
    assert taxonomy.class_index() == {s: i for i, s in enumerate(taxonomy.SLUGS)}


def test_builtin_mappings_agree_with_shared_suggestions(envsounds_meta):
    """Every shared label maps to the class the data curators suggested; 'approx.' <-> approximate."""
    by_name = {c.name: c.slug for c in taxonomy.CLASSES}
    mapping = taxonomy.load_mapping()
    pairs = envsounds_meta[["original_label", "taxonomy_class_suggested"]].drop_duplicates()
    assert len(pairs) == envsounds_meta["original_label"].nunique()  # one suggestion per label
    for label, suggested in pairs.itertuples(index=False):
        name = suggested.split(" (approx.")[0]
        rule = mapping.rules[label]
        assert rule.cls == by_name[name], label
        assert rule.approximate == ("approx." in suggested), label


def test_esc50_mapping_covers_all_50_labels():
    rules = taxonomy.load_mapping("esc50").rules
    assert len(rules) == 50
    assert rules["pig"].cls is None and rules["chainsaw"].approximate


def test_unknown_labels_are_listed_together_with_the_file_to_edit():
    mapping = taxonomy.load_mapping("urbansound8k")
    with pytest.raises(taxonomy.MappingError) as err:
        taxonomy.map_labels(["siren", "zebra", "yak", "zebra"], mapping)
    msg = str(err.value)
    assert "zebra" in msg and "yak" in msg and "2 label(s)" in msg
    assert "urbansound8k.yaml" in msg and "--drop-unmapped" in msg
    assert isinstance(err.value, InputError)


def test_drop_unmapped_and_null_labels_map_to_none():
    mapping = taxonomy.load_mapping("default")
    assert taxonomy.map_labels(["zebra", "pig", "dog_bark"], mapping, drop_unmapped=True) == [None, None, "dogs"]


def test_user_mapping_file_combines_with_builtin(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("labels:\n  tractor: {class: vehicle_idling, approximate: true}\n  ruido: null\n"
                 "  'coche pasando': vehicle_passby\n", encoding="utf-8")
    mapping = taxonomy.load_mapping(f"esc50,{f}")
    assert taxonomy.map_labels(["tractor", "ruido", "coche pasando", "dog"], mapping) == [
        "vehicle_idling", None, "vehicle_passby", "dogs"]
    assert mapping.rules["tractor"].approximate
    assert mapping.files[-1] == str(f)


@pytest.mark.parametrize("text, fragment", [
    ("labels:\n  x: not_a_class\n", "unknown classes"),
    ("just a string\n", "top-level 'labels:'"),
    ("labels: [\n", "not valid YAML"),
    ("labels:\n  x: [1, 2]\n", "must be a slug"),
])
def test_bad_mapping_files_say_what_is_wrong(tmp_path, text, fragment):
    f = tmp_path / "bad.yaml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(taxonomy.MappingError, match=re.escape(fragment)):
        taxonomy.load_mapping(str(f))


def test_conflicting_mappings_and_missing_file(tmp_path):
    f = tmp_path / "conflict.yaml"
    f.write_text("labels:\n  dog: cats\n", encoding="utf-8")
    with pytest.raises(taxonomy.MappingError, match="'dog' is mapped to dogs"):
        taxonomy.load_mapping(f"esc50,{f}")
    with pytest.raises(taxonomy.MappingError, match="does not exist"):
        taxonomy.load_mapping(str(tmp_path / "nope.yaml"))
