"""The study's 21 classes (Table 1 of the paper) and mappings from source labels to them.

A mapping is a YAML file: ``labels: {source_label: {class: slug, approximate: bool, note: str}}``;
a label mapped to ``null`` is known and deliberately excluded (e.g. ESC-50's ``pig``). A label
missing from the mapping is an error that names the label and the file to edit, unless the caller
asks to drop unmapped labels explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from clapnb.errors import InputError


@dataclass(frozen=True)
class SoundClass:
    slug: str
    name: str
    prompt: str
    synonyms: tuple[str, ...] = ()


#: The 21 classes of Table 1, in the paper's order; slugs are stable identifiers used in files.
CLASSES: tuple[SoundClass, ...] = (
    SoundClass("airplane", "Airplane", "an airplane", ("a jet flying overhead", "an aircraft")),
    SoundClass("bells", "Bells", "bells ringing", ("church bells", "a bell tolling")),
    SoundClass("birds", "Birds", "birds chirping", ("birdsong", "birds singing")),
    SoundClass("cats", "Cats", "a cat meowing", ("cats", "a cat")),
    SoundClass("chicken_coop", "Chicken coop", "chickens in a coop", ("a hen clucking", "a rooster crowing")),
    SoundClass("cicadas_crickets", "Cicadas and crickets", "cicadas and crickets", ("crickets chirping", "insects buzzing")),
    SoundClass("car_horn", "Clacson", "a car horn", ("a horn honking", "a vehicle horn")),
    SoundClass("crows_seagulls", "Crows and seagulls", "crows and seagulls", ("a crow cawing", "seagulls")),
    SoundClass("dogs", "Dogs", "a dog barking", ("dogs", "a dog")),
    SoundClass("glass_breaking", "Glass breaking", "glass breaking", ("shattering glass", "a window breaking")),
    SoundClass("helicopter", "Helicopter", "a helicopter", ("helicopter rotor blades", "a helicopter flying")),
    SoundClass("lawn_mower", "Lawn mower and brush cutter", "a lawn mower and brush cutter", ("a lawn mower", "a brush cutter")),
    SoundClass("music", "Music", "music", ("street music", "a band playing")),
    SoundClass("sirens_alarms", "Sirens and alarms", "sirens and alarms", ("a siren", "an alarm")),
    SoundClass("thunder_fireworks_gunshot", "Thunder, fireworks and gunshot", "thunder, fireworks and gunshots", ("thunder", "fireworks", "a gunshot")),
    SoundClass("train", "Train", "a train", ("a train passing", "a railway")),
    SoundClass("vacuum_fan_hairdryer", "Vacuum cleaner, fan and hairdryer", "a vacuum cleaner, fan and hairdryer", ("a vacuum cleaner", "a hair dryer")),
    SoundClass("vehicle_idling", "Vehicle idling", "a vehicle idling", ("an engine idling", "a car engine running")),
    SoundClass("vehicle_passby", "Vehicle pass-by", "a vehicle passing by", ("a car driving past", "road traffic")),
    SoundClass("voices", "Voices", "people talking", ("voices", "children playing")),
    SoundClass("workshop", "Workshop", "a workshop with power tools", ("a drill", "sawing")),
)

BY_SLUG: dict[str, SoundClass] = {c.slug: c for c in CLASSES}
SLUGS: tuple[str, ...] = tuple(c.slug for c in CLASSES)
#: The site's residual sound (``--background``): a probe class, never a detected event, reported
#: apart from the 21 classes.
BACKGROUND = "background"


#: How tables for readers name the background class (files and code keep the slug).
BACKGROUND_NAME = "Background (site residual)"


def class_name(slug):
    """The paper's name of a class slug, for readers (anything that is not a slug comes back unchanged)."""
    if slug == BACKGROUND:
        return BACKGROUND_NAME
    return BY_SLUG[slug].name if isinstance(slug, str) and slug in BY_SLUG else slug

#: Built-in mapping names and their files under ``clapnb/mappings``.
BUILTIN_MAPPINGS = {"esc50": "esc50.yaml", "urbansound8k": "urbansound8k.yaml"}
#: ``default`` merges every built-in mapping (labels of ESC-50 and UrbanSound8K do not conflict).
DEFAULT_MAPPING = "default"


class MappingError(InputError):
    """Labels that a mapping does not know, or a malformed mapping file."""


@dataclass(frozen=True)
class LabelRule:
    cls: str | None  # None: known label, deliberately excluded
    approximate: bool = False
    note: str = ""


@dataclass(frozen=True)
class Mapping:
    rules: dict[str, LabelRule]
    files: tuple[str, ...]  # where the rules came from: the files a user edits

    @property
    def name(self) -> str:
        return "+".join(Path(f).stem for f in self.files)


def _builtin_path(name: str) -> str:
    return os.fspath(resources.files("clapnb") / "mappings" / BUILTIN_MAPPINGS[name])


def _read_mapping_file(path: str) -> dict[str, LabelRule]:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh) or {}
    except FileNotFoundError as exc:
        raise MappingError(f"mapping file {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise MappingError(f"mapping file {path} is not valid YAML: {' '.join(str(exc).split())}") from exc
    except UnicodeDecodeError as exc:
        raise MappingError(f"mapping file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                           "save it as UTF-8") from None
    except IsADirectoryError:
        raise MappingError(f"mapping file {path} is a folder; give the YAML file") from None
    labels = doc.get("labels") if isinstance(doc, dict) else None
    if not isinstance(labels, dict):
        raise MappingError(f"mapping file {path} needs a top-level 'labels:' dictionary "
                           "(source label -> class slug or {class: slug, approximate: true})")
    rules: dict[str, LabelRule] = {}
    bad: list[str] = []
    for label, spec in labels.items():
        if spec is None or isinstance(spec, str):
            rule = LabelRule(spec)
        elif isinstance(spec, dict):
            rule = LabelRule(spec.get("class"), bool(spec.get("approximate", False)), str(spec.get("note", "")))
        else:
            raise MappingError(f"mapping file {path}: entry for {label!r} must be a slug, null or a dictionary")
        if rule.cls is not None and rule.cls not in BY_SLUG:
            bad.append(f"{label} -> {rule.cls}")
        rules[str(label)] = rule
    if bad:
        raise MappingError(f"mapping file {path} maps to unknown classes: {', '.join(bad)}. "
                           f"Valid class slugs: {', '.join(SLUGS)}")
    return rules


def load_mapping(spec: str | os.PathLike | None = None) -> Mapping:
    """Load a mapping: a built-in name (``esc50``, ``urbansound8k``, ``default``) or a YAML path.

    Several may be combined with commas (``esc50,my_labels.yaml``); a label mapped differently by
    two of them is an error.
    """
    spec = DEFAULT_MAPPING if spec is None else os.fspath(spec)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    files: list[str] = []
    for n in names:
        if n == DEFAULT_MAPPING:
            files.extend(_builtin_path(b) for b in BUILTIN_MAPPINGS)
        elif n in BUILTIN_MAPPINGS:
            files.append(_builtin_path(n))
        else:
            files.append(os.path.abspath(n))
    rules: dict[str, LabelRule] = {}
    origin: dict[str, str] = {}
    for f in files:
        for label, rule in _read_mapping_file(f).items():
            if label in rules and rules[label].cls != rule.cls:
                raise MappingError(f"label {label!r} is mapped to {rules[label].cls} in {origin[label]} "
                                   f"and to {rule.cls} in {f}; keep one")
            rules.setdefault(label, rule)
            origin.setdefault(label, f)
    return Mapping(rules, tuple(files))


def map_labels(labels: Iterable[str], mapping: Mapping, drop_unmapped: bool = False) -> list[str | None]:
    """Map source labels to class slugs (``None`` for excluded labels).

    Raises :class:`MappingError` listing *every* unknown label at once, unless ``drop_unmapped``.
    """
    labels = [str(x) for x in labels]
    unknown = sorted({x for x in labels if x not in mapping.rules})
    if unknown and not drop_unmapped:
        raise MappingError(
            f"{len(unknown)} label(s) are not in the mapping: {', '.join(unknown)}. "
            f"{_where_to_add(mapping)} (map each to a class slug, or to null to exclude it), "
            f"or use --drop-unmapped to skip them. "
            f"Valid class slugs: {', '.join(SLUGS)}")
    return [mapping.rules[x].cls if x in mapping.rules else None for x in labels]


def _where_to_add(mapping: Mapping) -> str:
    """Built-in files belong to the installed package (replaced on upgrade): users add to a copy."""
    builtin = {os.path.normpath(_builtin_path(n)) for n in BUILTIN_MAPPINGS}
    own = [f for f in mapping.files if os.path.normpath(f) not in builtin]
    if own:
        return f"Add them to {' or '.join(own)}"
    return (f"Copy {' and '.join(mapping.files)} to a file of your own (outside the installed package), add "
            "them there and pass it with --mapping FILE")


def class_index(classes: Sequence[str] = SLUGS) -> dict[str, int]:
    return {c: i for i, c in enumerate(classes)}
