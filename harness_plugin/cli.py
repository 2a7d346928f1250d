"""The `antidistill` umbrella command.

Subcommands live next to the code they drive and register themselves through the entry-point group
`antidistill.commands` (a callable taking argparse's subparsers). That keeps `harness_plugin` free of imports
from `benchmarks` and `analysis`, and keeps `antidistill --help` fast: handlers import heavy libraries lazily.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

COMMAND_GROUP = "antidistill.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="antidistill",
        description=(
            "Antidistillation sampling (Savani et al., arXiv 2504.13146): sample reasoning traces that stay useful "
            "to readers but make poor distillation data. Run `antidistill COMMAND --help` for each command."
        ),
    )
    from harness_plugin import __version__

    parser.add_argument("--version", action="version", version=f"antidistill {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for entry_point in sorted(entry_points(group=COMMAND_GROUP), key=lambda ep: ep.name):
        try:
            register = entry_point.load()
        except ImportError as error:  # a broken optional command must not take the others down
            _register_broken(subparsers, entry_point.name, error)
            continue
        register(subparsers)
    show_defaults(parser)
    return parser


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append `(default: X)` to every option's help, in this parser and every subcommand below it.

    Done once over the finished tree rather than by a formatter class per `add_parser` call, so that commands
    registered by other modules get it too; options whose help already names its default are left alone.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in set(action.choices.values()):
                show_defaults(subparser)
            continue
        default = action.default
        # --help and --version have SUPPRESS as their default, so they are skipped here too
        if (not action.option_strings or default is None or default is False or default == argparse.SUPPRESS
                or default in ("", [], ())):
            continue
        help_text = action.help or ""
        if "default" in help_text or help_text == argparse.SUPPRESS:
            continue
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        suffix = f"(default: {shown.replace('%', '%%')})"
        action.help = f"{help_text} {suffix}" if help_text else suffix


def _register_broken(subparsers: argparse._SubParsersAction, name: str, error: ImportError) -> None:
    def report(_: argparse.Namespace) -> int:
        print(f"antidistill {name} is unavailable: {error}. Reinstall the package (pip install -e .).",
              file=sys.stderr)
        return 1

    parser = subparsers.add_parser(name, help=f"(unavailable: {error})")
    parser.set_defaults(func=report)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from harness_plugin.errors import AntidistillError
    from harness_plugin.progress import progress_bars_hidden

    hidden = progress_bars_hidden() if getattr(args, "no_progress", False) else contextlib.nullcontext()
    try:
        with hidden:
            return int(args.func(args) or 0)
    except (AntidistillError, OSError) as error:
        # Errors a user can cause (bad input, a missing or unwritable path, a full disk) are one line, not a
        # traceback: the message already says what to fix. Anything else is a bug and keeps its traceback.
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
