"""The README's code examples must keep running as written."""

import pathlib
import re

import pytest

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize("section", ["The functional API", "Your own model under test-time CoT"])
def test_readme_code_example_runs(section):
    code = re.search(rf"## {re.escape(section)}\n\n.*?```python\n(.*?)```", README, re.S)
    assert code, f"README lost its example under '## {section}'"
    namespace = {}
    exec(compile(code.group(1), "README.md", "exec"), namespace)
    if section.startswith("Your own"):  # the clipped step never clips at these sizes early on: k = 1 equals gd
        import numpy as np

        ds, gd = namespace["ds"], namespace["gd"]
        assert ds.attrs["model"] == "clipped_gd" and "limit_error" in gd and "limit_error" not in ds
        assert np.all(np.isfinite(ds["mean"])) and float(ds["mean"].isel(k=-1).max()) < float(ds["mean"].isel(k=0).min())


def _table_commands():
    """Every ``ttscale ...`` command of the README's command table, first alternative of each ``a\\|b``."""
    section = re.search(r"## Command line\n(.*?)\n## ", README, re.S).group(1)
    rows = re.findall(r"^\| `(ttscale [^`]*)` \|", section, re.M)
    out = []
    for row in rows:
        row = re.sub(r"\[([^\]]*)\]", r"\1", row)  # optional parts: keep them (they must parse too)
        row = re.sub(r"(\S+?)\\\|\S+", r"\1", row)  # a\|b\|c → a
        out.append(row.replace("...", "").split()[1:])
    return out


def test_readme_command_table_parses_with_the_real_cli():
    """Each command in the table is accepted by ``ttscale``'s own parser (a renamed or dropped option fails)."""
    from ttscale import cli

    commands = _table_commands()
    assert len(commands) >= 8, commands
    parser = cli.build_parser()
    for argv in commands:
        argv = [a for a in argv if a != "NAME"]  # placeholder of reproduce's preset names
        parser.parse_args(argv)  # exits (SystemExit 2) on an unknown option or a bad value
