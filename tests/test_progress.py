"""The sweep's progress bar: one tick per chunk (not once per m), counting cell·prompts, with the cells done in the postfix."""

from __future__ import annotations

import re

import pytest


class _Recorder:
    """Stands in for ``tqdm.auto.tqdm``: records every update and postfix."""

    instances: list = []

    def __init__(self, total=None, initial=0, **kwargs):
        self.total, self.n, self.kwargs = total, initial, kwargs
        self.updates, self.postfixes, self.closed = [], [], False
        _Recorder.instances.append(self)

    def update(self, count):
        self.n += count
        self.updates.append(count)

    def set_postfix_str(self, text, refresh=True):
        self.postfixes.append(text)

    def set_postfix(self, *args, **kwargs):  # pragma: no cover - the sweep uses set_postfix_str
        self.postfixes.append(str(kwargs))

    def close(self):
        self.closed = True


def test_sweep_progress_moves_per_chunk_with_cells(monkeypatch):
    import tqdm.auto

    from ttscale.sweep import SweepSpec, run_sweep

    monkeypatch.setattr(tqdm.auto, "tqdm", _Recorder)
    _Recorder.instances.clear()
    # the grid of tests/test_sweep.py's chunking test: its compiled programs are reused when both run in one process
    prompts, chunk = 600, 256  # chunks of 256, 256 and 88 prompts per m
    spec = SweepSpec(d=3, alphas=(0.0, 1.0), ns=(4.0, 16.0), ms=(12.0, float("inf")), k_max=4, prompts=prompts, chunk=chunk)
    run_sweep(spec, progress=True)
    (bar,) = _Recorder.instances
    cells, sizes = 2 * 2, [256, 256, 88]
    assert bar.total == 2 * cells * prompts and bar.closed
    assert bar.updates == [cells * size for size in sizes] * 2  # one tick per chunk, each the chunk's cell·prompts
    assert bar.kwargs.get("unit") == "prompt"
    done = [re.search(r"cells (\d+(?:\.\d)?)/(\d+)", p) for p in bar.postfixes]
    assert all(done) and {d.group(2) for d in done} == {str(2 * cells)}
    values = [float(d.group(1)) for d in done]
    assert values == sorted(values) and values[-1] == pytest.approx(2 * cells)
    # the cells count moves with every chunk, not only when a test length is finished
    expected = [cells * (256 / 600), cells * (512 / 600), cells, cells * (856 / 600), cells * (1112 / 600), 2 * cells]
    assert sorted(set(values)) == pytest.approx(expected, abs=0.06)
