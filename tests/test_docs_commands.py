"""Every `m2s2l-edge` command the documentation shows is one the CLI parses: its commands and options exist.

Read from README.md, docs/*.md, export/README.md and export/jetson/README.md: fenced code blocks (line continuations
joined, comments dropped, pipelines and `&&` lists split) and inline code spans. Values and file arguments are not
checked (a doc writes `--data D` or `m.onnx`); optional parts written `[--fps]` and elisions (`...`, `…`) are
accepted. So an option that was renamed or removed (`--half` for `--fp16`) cannot stay in the docs.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from m2s2l_edge.cli.app import app

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted([REPO / "README.md", REPO / "export" / "README.md", REPO / "export" / "jetson" / "README.md",
               *(REPO / "docs").glob("*.md")])

_FENCE = re.compile(r"^```")
_INLINE = re.compile(r"`([^`\n]+)`")
_SEPARATORS = {"|", "||", "&&", ";"}


def _fenced_lines(text: str) -> list[tuple[int, str]]:
    """(line number, logical line) of every fenced code block, continuation lines joined."""
    out, inside, pending, start = [], False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line.strip()):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def _inline_spans(text: str) -> list[tuple[int, str]]:
    inside, out = False, []
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line.strip()):
            inside = not inside
            continue
        if not inside:
            out += [(number, m.group(1)) for m in _INLINE.finditer(line)]
    return out


def _tokens(line: str) -> list[str] | None:
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # prose with an unmatched quote: not a command line
        return None


def commands_in(text: str) -> list[tuple[int, list[str]]]:
    """Each `m2s2l-edge` invocation in a markdown text: (line, the arguments after the program name)."""
    found = []
    for number, line in _fenced_lines(text) + _inline_spans(text):
        tokens = _tokens(line)
        if not tokens:
            continue
        segment: list[str] = []
        for token in [*tokens, ";"]:
            if token not in _SEPARATORS:
                segment.append(token)
                continue
            for i, word in enumerate(segment):
                # m2s2l-edge itself, a path to it (.venv/bin/m2s2l-edge), or `python -m m2s2l_edge` / torchrun -m
                if Path(word).name == "m2s2l-edge" or (word == "m2s2l_edge" and i and segment[i - 1] == "-m"):
                    found.append((number, segment[i + 1:]))
                    break
            segment = []
    return found


def _option_names(command) -> dict[str, object]:
    names = {"--help": None}
    for param in command.params:
        if getattr(param, "param_type_name", "") == "option":
            for name in (*param.opts, *param.secondary_opts):
                names[name] = param
    return names


def problems(args: list[str], root) -> list[str]:
    """What in ``args`` the CLI would not know: an unknown command or an unknown option of the command reached."""
    command, path, bad = root, ["m2s2l-edge"], []
    words = iter(args)
    for raw in words:
        word = raw.strip("[]")
        if not word or word in ("...", "…") or "…" in word or word == "COMMAND":
            continue
        if word.startswith("-") and len(word) > 1:
            for alternative in word.split("|"):
                name = alternative.split("=", 1)[0]
                options = _option_names(command)
                if name not in options:
                    bad.append(f"{' '.join(path)}: no option {name}")
                    continue
                param = options[name]
                takes_value = param is not None and not param.is_flag and not param.count
                if takes_value and "=" not in alternative and not raw.endswith("]"):
                    next(words, None)
            continue
        if hasattr(command, "commands"):  # a group: the word names a command
            sub = command.commands.get(word)
            if sub is None:
                if word.isupper() or "<" in word:  # a placeholder such as <command>
                    continue
                bad.append(f"{' '.join(path)}: no command {word!r}")
                break
            command, path = sub, [*path, word]
    return bad


@pytest.fixture(scope="module")
def root():
    """The click command typer builds (typer vendors click, so it is reached through typer)."""
    return typer.main.get_command(app)


def test_the_docs_show_commands(root):
    counted = {doc.name: len(commands_in(doc.read_text(encoding="utf-8"))) for doc in DOCS}
    assert sum(counted.values()) >= 40, counted
    assert counted["README.md"] >= 10


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_documented_command_parses(doc, root):
    text = doc.read_text(encoding="utf-8")
    bad = [f"{doc.relative_to(REPO)}:{line}: {msg}" for line, args in commands_in(text) for msg in problems(args, root)]
    assert bad == []


def test_the_check_catches_a_planted_unknown_option_and_command(root):
    text = ("Run:\n\n```bash\nm2s2l-edge export --weights last.pt \\\n    --half --out m.onnx   # FP16\n"
            "m2s2l-edge serve triton-rep --onnx m.onnx\n```\n\nor `m2s2l-edge bench --preset paper --itterations 5`.\n")
    found = {line: problems(args, root) for line, args in commands_in(text)}
    assert found == {4: ["m2s2l-edge export: no option --half"],
                     6: ["m2s2l-edge serve: no command 'triton-rep'"],
                     9: ["m2s2l-edge bench: no option --itterations"]}
    ok = ("```\nm2s2l-edge table [--fps] --warmup 2 --markdown T.md ...\n"
          "torchrun --nproc-per-node 2 -m m2s2l_edge train --batch 4\n```\n")
    assert [problems(args, root) for _, args in commands_in(ok)] == [[], []]
