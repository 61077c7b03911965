"""The ``clapnb`` command: a thin layer over the package's functions.

Each sub-command lives in ``clapnb/commands/<name>.py`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a callable ``(args) -> int``. Heavy imports (torch,
msclap) happen inside those callables so that ``clapnb --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from clapnb import __version__, commands
from clapnb.errors import ClapnbError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clapnb",
        description="Reproduce and extend the CLAP transfer-learning study (Artuso et al., 2025).",
    )
    parser.add_argument("--version", action="version", version=f"clapnb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"clapnb.commands.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from clapnb.io import FILESYSTEM_ERRNOS, describe_os_error  # after parsing: --help stays fast
    from clapnb.locks import Terminated, end_children_on_signal
    try:
        with end_children_on_signal():
            return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"clapnb: {what}; finished work is kept and the next run resumes from it", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except ClapnbError as exc:
        print(f"clapnb {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # Where files go (permissions, a read-only or full disk, a file where a folder belongs) is
        # the user's to fix, not a bug: one line naming the path. Other OS errors keep their traceback.
        if exc.errno not in FILESYSTEM_ERRNOS:
            raise
        print(f"clapnb {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
