"""Lists of whole numbers on the command line (``1-10``, ``0,3,7``, ``1-3,7``): one grammar for
``--lengths`` and ``--seeds``. A leaf module (no clapnb imports but errors), so config and folds can share it.
"""

from __future__ import annotations

import numbers
import re

from clapnb.errors import InputError


def whole_number_ranges(text: str, *, allow_point_zero: bool = False) -> list[int]:
    """``"1-3,7"`` -> ``[1, 2, 3, 7]`` (unsorted, with repeats); ValueError names the bad part.

    One grammar for every list-of-integers option (``--lengths``, ``--seeds``), so they accept the same
    spellings; each caller words the error for its own option.
    """
    items: list[int] = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo > hi:
                raise ValueError(f"range {part} runs backwards; write {hi}-{lo}")
            items.extend(range(lo, hi + 1))
        elif re.fullmatch(r"\d+(\.0*)?" if allow_point_zero else r"\d+", part):
            items.append(int(float(part)))
        else:
            raise ValueError(f"{part!r} is not a whole number")
    return items


def parse_seeds(text: str | int | None = None, repeats: int | None = None) -> tuple[int, ...]:
    """``--seeds 0-4`` / ``0,3,7`` or ``--repeats N`` (seeds 0..N-1) -> sorted unique seeds."""
    if text not in (None, "") and repeats not in (None, 0, 1):
        raise InputError("give either --seeds or --repeats, not both")
    if text in (None, ""):
        n = 1 if repeats is None else repeats
        if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
            raise InputError(f"--repeats {repeats!r}: give a whole number of repeats >= 1")
        return tuple(range(int(n)))
    if isinstance(text, numbers.Integral):
        return (int(text),)
    hint = "use a range or list of whole numbers, e.g. 0-4 or 0,3,7"
    try:
        items = whole_number_ranges(str(text))
    except ValueError as exc:
        raise InputError(f"--seeds {text!r}: {exc}; {hint}") from None
    if not items:
        raise InputError(f"--seeds {text!r}: no seed given; {hint}")
    return tuple(sorted(set(items)))
