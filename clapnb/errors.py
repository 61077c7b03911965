"""Errors that the CLI and notebooks show as one clear message (no traceback needed)."""


class ClapnbError(Exception):
    """A problem with the user's input or environment; the message says what to do."""


class InputError(ClapnbError, ValueError):
    """Bad input data or parameters."""


def torch_load_reason(exc: BaseException) -> str:
    """What went wrong in a safe ``torch.load`` (weights_only=True), without torch's advice.

    torch's message says that re-running with ``weights_only=False`` "will likely succeed": for a
    file of unknown origin that means running arbitrary code, so it is never repeated to users.
    """
    import re

    text = str(exc)
    m = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\s*Please use|\s*Check the documentation|$)", text, re.S)
    if m and m.group(1).strip():
        reason = m.group(1)
    else:
        reason = re.split(r"(?<=[.!?])\s|\n", text.strip(), maxsplit=1)[0]
    reason = " ".join(reason.split())
    if "weights_only" in reason or not reason:
        reason = type(exc).__name__
    return reason.rstrip(".")


def error_summary(exc: BaseException) -> str:
    """One line for a failure: a notebook cell's error name and value, else the exception's."""
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    return f"{type(exc).__name__}: {exc}"
