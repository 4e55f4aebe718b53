"""The shared training core, helpers.training: step, clipping, history, threads, device."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers.training import (
    PlainAdam,
    StepHistory,
    cpu_threads,
    model_device,
    optimizer_step,
    progress_bar,
)


class _Recorder:
    """An optimiser that records the gradient norm it is asked to step with."""

    def __init__(self, params):
        self.param_groups = [{"params": list(params)}]
        self.norms: list[float] = []
        self.zeroed = 0

    def zero_grad(self, set_to_none=True):
        self.zeroed += 1
        for p in self.param_groups[0]["params"]:
            p.grad = None

    def step(self):
        grads = [p.grad for p in self.param_groups[0]["params"]]
        self.norms.append(float(torch.cat([g.flatten() for g in grads]).norm()))


def test_the_step_clips_before_stepping():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    optimizer = _Recorder([w])
    loss = (w * torch.tensor([10.0, 10.0])).sum()  # gradient (10, 10), norm 14.1
    value = optimizer_step(optimizer, loss, clip=1.0)
    assert value == pytest.approx(70.0)
    assert optimizer.norms == [pytest.approx(1.0)]
    assert optimizer.zeroed == 1


def test_the_step_zeroes_old_gradients_and_does_not_clip_without_clip():
    w = nn.Parameter(torch.tensor([1.0]))
    w.grad = torch.tensor([100.0])  # stale: must not be added to
    optimizer = _Recorder([w])
    optimizer_step(optimizer, (2 * w).sum())
    assert optimizer.norms == [pytest.approx(2.0)]


def test_plain_adam_matches_torch_adam():
    torch.manual_seed(0)
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    mine, theirs = PlainAdam(a.parameters(), lr=0.1), torch.optim.Adam(b.parameters(), lr=0.1)
    x = torch.randn(5, 3)
    for _ in range(3):
        optimizer_step(mine, a(x).pow(2).mean(), clip=0.5)
        optimizer_step(theirs, b(x).pow(2).mean(), clip=0.5)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_history_records_each_step():
    history = StepHistory()
    history.record(2.0, 0.1, 0.5)
    history.record(1.0, None, 0.25)
    assert history.steps == 2
    assert history.train_loss == [2.0, 1.0]
    assert history.learning_rates == [0.1]
    assert history.train_seconds == pytest.approx(0.75)
    with pytest.raises(ValueError, match="seconds"):
        history.record(1.0, seconds=-1.0)


def test_threads_are_restored_after_the_scope():
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), cpu_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with cpu_threads(1, device="meta"):  # not the CPU: left alone
        assert torch.get_num_threads() == before
    with cpu_threads(None):
        assert torch.get_num_threads() == before


def test_device_of_a_model():
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(nn.ReLU()) == torch.device("cpu")
    assert model_device(nn.Linear(2, 2, device="meta")) == torch.device("meta")


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="int >= 1"), cpu_threads(0):
        pass
    with pytest.raises(ValueError, match="nn.Module"):
        model_device("not a model")
    w = nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="scalar"):
        optimizer_step(_Recorder([w]), w * 2)
    with pytest.raises(ValueError, match="clip"):
        optimizer_step(_Recorder([w]), w.sum(), clip=0.0)
    with pytest.raises(ValueError, match="empty"):
        PlainAdam([])
    with pytest.raises(ValueError, match="lr"):
        PlainAdam([w], lr=0)


def test_progress_bar_can_be_silent():
    bar = progress_bar(range(3), progress=False)
    assert list(bar) == [0, 1, 2]
    assert bar.disable
