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
