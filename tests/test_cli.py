"""The `antidistill` command as a user runs it: a version, and one `error:` line (exit 2) for their own mistakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ANTIDISTILL = [sys.executable, "-m", "harness_plugin.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _run(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ANTIDISTILL, *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300)


def test_version() -> None:
    from harness_plugin import __version__

    result = subprocess.run([*ANTIDISTILL, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == f"antidistill {__version__}"


def test_user_errors_are_one_line_and_exit_2(tmp_path, tiny_dir) -> None:
    missing = _run("gradient", "--proxy", str(tiny_dir / "proxy"), "--traces", str(tmp_path / "none.jsonl"),
                   "--output", str(tmp_path / "g"), cwd=tmp_path)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n{not json\n")
    malformed = _run("gradient", "--proxy", str(tiny_dir / "proxy"), "--traces", str(broken),
                     "--output", str(tmp_path / "g"), cwd=tmp_path)
    for result, names in ((missing, "none.jsonl"), (malformed, "broken.jsonl")):
        assert result.returncode == 2, result.stderr[-2000:]
        lines = [line for line in result.stderr.splitlines() if line.strip() and "Loading weights" not in line]
        assert "Traceback" not in result.stderr and lines[-1].startswith("error:") and names in lines[-1], lines
    assert not (tmp_path / "g").exists()


def test_outputs_are_checked_before_any_model_loads_and_user_files_survive(tmp_path, tiny_dir) -> None:
    """gradient refuses an existing folder that is not a gradient (a user's files), generate an existing file
    without --overwrite, and both refuse empty inputs, all before loading a model (no "Loading weights")."""
    traces = tmp_path / "traces.jsonl"
    traces.write_text(json.dumps({"prompt": "Tom has 3 apples.", "completion": " 3 + 5 = 8. #### 8"}) + "\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    user_folder = tmp_path / "mine"
    user_folder.mkdir()
    (user_folder / "notes.txt").write_text("keep me")
    user_file = tmp_path / "out.jsonl"
    user_file.write_text("keep me too")
    proxy = str(tiny_dir / "proxy")
    cases = [
        (("gradient", "--proxy", proxy, "--traces", str(traces), "--output", str(user_folder)), "exists"),
        (("gradient", "--proxy", proxy, "--traces", str(empty), "--output", str(tmp_path / "g")), "no traces"),
        (("generate", "--teacher", proxy, "--prompts", str(traces), "--output", str(user_file), "--sampler",
          "temperature"), "exists"),
        (("generate", "--teacher", proxy, "--prompts", str(empty), "--output", str(tmp_path / "t.jsonl")),
         "no prompts"),
        (("generate", "--teacher", proxy, "--proxy", proxy, "--gradient", str(tmp_path / "nowhere"), "--lam", "1",
          "--prompts", str(traces), "--output", str(tmp_path / "t.jsonl")), "no proxy gradient"),
    ]
    for args, message in cases:
        result = _run(*args, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr[-1500:])
        assert "Loading weights" not in result.stderr, args
    assert (user_folder / "notes.txt").read_text() == "keep me" and user_file.read_text() == "keep me too"
    assert not (tmp_path / "g").exists() and not (tmp_path / "t.jsonl").exists()
    # an earlier gradient folder is ours to replace
    first = _run("gradient", "--proxy", proxy, "--traces", str(traces), "--output", str(tmp_path / "g"), cwd=tmp_path)
    again = _run("gradient", "--proxy", proxy, "--traces", str(traces), "--output", str(tmp_path / "g"), cwd=tmp_path)
    assert first.returncode == 0 and again.returncode == 0, again.stderr[-1500:]
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["gradient.json", "gradient.safetensors"]


def _commands(parser, path=()):
    """Every (command path, parser) in the `antidistill` tree, the root included."""
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def test_every_option_with_a_default_shows_it_in_help() -> None:
    import argparse

    from harness_plugin.cli import build_parser

    checked = 0
    for path, parser in _commands(build_parser()):
        text = "".join(parser.format_help().split())  # no whitespace at all: argparse breaks long words (paths)
        for action in parser._actions:
            default = action.default
            if (not action.option_strings or default is None or default is False or default in ("", [])
                    or default == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction)):
                continue
            help_text = "".join(parser._get_formatter()._expand_help(action).split())
            assert "default" in help_text and help_text in text, (path, action.option_strings, default)
            checked += 1
    assert checked > 20  # the tree was walked (gradient, generate, bench, figures, perf, ...)
    # and a real user sees it: a subprocess, not the parser object
    result = subprocess.run([*ANTIDISTILL, "generate", "--help"], capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0 and "(default: 256)" in " ".join(result.stdout.split())
