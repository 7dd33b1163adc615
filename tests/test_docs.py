"""The docs cannot drift from the code (issue 18): worked examples run, printed commands parse.

* every fenced ``python`` block of ``docs/conventions.md`` is executed (its asserts are the worked numbers);
* every ``wai-*`` command in a fenced shell block of the README and ``docs/`` is parsed by the real click
  commands (the subcommand exists, every option exists and its value converts; nothing runs), and every
  ``bash scripts/...`` / ``python <file>`` names a file of the repository (usage synopses with ``[--option]``
  are not commands and are skipped).

Blocks that run on the demo's output (the README's "Try it" section, ``docs/format.md``'s reading example) are
run in ``tests/test_newcomer.py``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from wai.cli import convert_main, demo_main, report_main, validate_main

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
ENTRY_POINTS: dict[str, click.Command] = {"wai-convert": convert_main, "wai-validate": validate_main,
                                          "wai-report": report_main, "wai-demo": demo_main}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SHELL_LANGS = {"bash", "sh", "shell", "console", ""}
#: First words of the command lines that are checked (anything else in a block is output or a layout tree).
KNOWN_HEADS = {*ENTRY_POINTS, "bash", "sh", "python", "python3", "torchrun", "source"}


def fenced(path: Path, langs: set[str]) -> list[tuple[int, str]]:
    """``(line number, body)`` of every fenced block of ``path`` whose language is in ``langs``."""
    text = path.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(2)) for m in FENCE.finditer(text) if m.group(1) in langs]


def shell_commands(body: str) -> list[str]:
    """The command lines of a shell block: continuations joined, comments and prompts dropped."""
    out, cur = [], ""
    for raw in body.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        cmd = cur.strip()
        cur = ""
        cmd = cmd[2:] if cmd.startswith("$ ") else cmd
        if cmd and not cmd.startswith("#"):
            out.append(cmd)
    return out


def _words(cmd: str) -> list[str]:
    words = shlex.split(cmd, comments=True)
    for sep in ("|", ">", "&&", ";"):  # only the first command of a pipeline / redirection
        if sep in words:
            words = words[: words.index(sep)]
    return words


def check_wai_command(words: list[str]) -> None:
    """Parse ``words`` (``wai-convert kitti360 --input ...``) with the real click command; raises on a bad one."""
    prog = Path(words[0]).name
    cmd = ENTRY_POINTS[prog]
    args = words[1:]
    try:
        if isinstance(cmd, click.Group):
            with cmd.make_context(prog, list(args)) as ctx:
                rest = [*ctx._protected_args, *ctx.args] if hasattr(ctx, "_protected_args") else \
                    [*ctx.protected_args, *ctx.args]
                name, sub, sub_args = cmd.resolve_command(ctx, rest)
                assert sub is not None and name is not None
                sub.make_context(name, list(sub_args), parent=ctx)
        else:
            cmd.make_context(prog, list(args))
    except click.exceptions.Exit as e:  # --help / --version
        assert e.exit_code == 0


def test_check_wai_command_catches_bad_commands() -> None:
    check_wai_command(["wai-convert", "kitti360", "-i", "a", "-o", "b", "--sample", "4"])
    check_wai_command(["wai-convert", "KITTI360", "--help"])
    for bad in (["wai-convert", "kitti36", "-i", "a", "-o", "b"], ["wai-convert", "kitti360", "-i", "a"],
                ["wai-convert", "kitti360", "-i", "a", "-o", "b", "--no-such-option"],
                ["wai-convert", "kitti360", "-i", "a", "-o", "b", "--sample", "many"],
                ["wai-report", "out", "--htm", "r.html"], ["wai-validate"]):
        with pytest.raises(click.UsageError):
            check_wai_command(bad)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_printed_commands_exist(doc: Path) -> None:
    problems = []
    for line, body in fenced(doc, SHELL_LANGS):
        for cmd in shell_commands(body):
            head = Path(cmd.split()[0]).name
            if head not in KNOWN_HEADS or re.search(r"\[-", cmd):  # layout trees, other tools, usage synopses
                continue
            words = _words(cmd)
            try:
                if head in ENTRY_POINTS:
                    check_wai_command(words)
                elif head in ("bash", "sh") and len(words) > 1:
                    assert (REPO / words[1]).is_file(), f"no file {words[1]}"
                elif head in ("python", "python3", "torchrun") and any(w.endswith(".py") for w in words):
                    script = next(w for w in words if w.endswith(".py"))
                    assert (REPO / script).is_file(), f"no file {script}"
                elif head == "source":
                    assert words[1] == ".venv/bin/activate" and ".venv" in (REPO / "scripts/setup.sh").read_text()
            except (click.UsageError, AssertionError) as e:
                problems.append(f"{doc.relative_to(REPO)}:{line}: `{cmd}`: {e}")
    assert not problems, "\n".join(problems)


def test_conventions_examples_run() -> None:
    blocks = fenced(REPO / "docs" / "conventions.md", {"python"})
    assert len(blocks) >= 5  # one per worked example
    for line, body in blocks:
        code = compile(body, f"docs/conventions.md:{line}", "exec")
        exec(code, {"__name__": "docs_example"})  # our own docs, run on purpose


def test_conventions_eth3d_example_says_what_the_code_computes() -> None:
    import numpy as np

    from wai.format.conventions import invert_pose, make_pose, qvec_to_rotmat

    T = invert_pose(make_pose(qvec_to_rotmat([0.7071068, 0, 0.7071068, 0]), np.array([-2.0, 0.0, 0.0])))
    text = (REPO / "docs" / "conventions.md").read_text()
    t = tuple(int(round(v)) for v in T[:3, 3])
    assert t == (0, 0, 2) and f"t_cw = -R_wc^T t_wc = {t}".replace(",)", ")") in text
