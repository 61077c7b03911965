"""Every input a command needs, checked together before any work starts.

A new user who lacks both the CLAP weights and the data should read one message naming both,
not fix one, wait for a rerun, and meet the next. The checks are cheap (file existence, a CSV
header, the hub's reachability); nothing is decoded or downloaded here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from clapnb.errors import ClapnbError, InputError


class MissingInputsError(InputError):
    """One or more inputs (data, weights, audio files) are missing; the message lists them all."""


def _indent(text: str) -> str:
    first, *rest = str(text).strip().splitlines()
    return "\n".join([f"  * {first}", *(f"    {line}" for line in rest)])


def backbone_problems(backbone: str, weights: str | os.PathLike | None = None) -> list[str]:
    """Why ``backbone`` cannot be loaded here (empty when it can), without loading it."""
    from clapnb import backbones

    try:
        backbones.check_backbone_available(backbone, weights)
    except ClapnbError as exc:  # BackboneUnavailableError, or a --weights path that is not a file
        return [f"weights: {exc}"]
    return []


def audio_problems(paths: Iterable[str], what: str) -> list[str]:
    """Audio files that do not exist (first few named), e.g. those a segments table refers to."""
    unique = sorted(set(map(str, paths)))
    absent = [p for p in unique if not os.path.isfile(p)]
    if not absent:
        return []
    shown = ", ".join(absent[:3]) + (", ..." if len(absent) > 3 else "")
    return [f"audio: {len(absent)} of the {len(unique)} recordings {what} refers to are missing ({shown}); "
            "restore them or rebuild the segments from the data you have"]


def raise_if_missing(problems: list[str]) -> None:
    """Raise one :class:`MissingInputsError` listing every problem (nothing when the list is empty)."""
    if not problems:
        return
    head = (f"{len(problems)} input{'s are' if len(problems) > 1 else ' is'} missing; nothing was started:")
    raise MissingInputsError("\n".join([head, *map(_indent, problems)]))


def check_inputs(*, data: str | None = None, backbone: str | None = None,
                 weights: str | os.PathLike | None = None, label_column: str = "label",
                 path_column: str = "path", group_column: str | None = None,
                 source_column: str | None = None, cache_dir: str | os.PathLike | None = None,
                 audio: tuple[Iterable[str], str] | None = None) -> None:
    """Check the data, the backbone's weights and listed audio files together; raise one message."""
    from clapnb import datasets

    problems: list[str] = []
    if data is not None:
        problems += datasets.missing_data(data, label_column=label_column, path_column=path_column,
                                          group_column=group_column, source_column=source_column,
                                          cache_dir=cache_dir)
    if backbone is not None:
        problems += backbone_problems(backbone, weights)
    if audio is not None:
        problems += audio_problems(*audio)
    raise_if_missing(problems)


def check_run_inputs(config) -> None:
    """:func:`check_inputs` for a resolved run configuration (``sweep``, ``reproduce``)."""
    check_inputs(data=config.data, backbone=config.backbone, weights=config.weights,
                 label_column=config.label_column, path_column=getattr(config, "path_column", "path"),
                 source_column=getattr(config, "source_column", None))
