"""The README's "Options" table, generated from the command tree and ``options.VOCABULARY``.

``python -m m2s2l_edge.cli.options_table`` prints it; a test checks that the README holds exactly this table, so
an option added to a command without documentation fails the suite.
"""

from __future__ import annotations


def command_options() -> dict[str, set[str]]:
    """{option spelling: {commands that take it}} over the whole command tree (Typer's Click commands)."""
    import typer.main

    from m2s2l_edge.cli.app import app

    found: dict[str, set[str]] = {}

    def walk(command, path: str) -> None:
        for param in command.params:
            for opt in (*param.opts, *param.secondary_opts):
                if opt.startswith("-") and opt != "--help":
                    found.setdefault(opt, set()).add(path or "m2s2l-edge")
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return found


def options_table() -> str:
    """Markdown rows in ``VOCABULARY``'s order: option, meaning, the commands that take it."""
    from m2s2l_edge.cli.options import VOCABULARY

    used = command_options()
    lines = ["| option | meaning | commands |", "|---|---|---|"]
    for opt, meaning in VOCABULARY.items():
        if opt in used:
            lines.append(f"| `{opt}` | {meaning} | {', '.join(sorted(used[opt]))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(options_table())
