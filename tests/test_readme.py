"""The README's API example must keep running as written."""

import pathlib
import re


def test_readme_api_example_runs():
    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"## The functional API\n\n```python\n(.*?)```", text, re.S)
    assert code, "README lost its functional-API example"
    exec(compile(code.group(1), "README.md", "exec"), {})
