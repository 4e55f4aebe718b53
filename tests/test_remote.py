"""The grader's side of the checks (helpers/checks/remote.py, helpers/grading/verdict.py), without
a kernel: the agent serves a loaded notebook in this process, through the same JSON channel the
autograder uses, so every exercise's check runs on the judge's side exactly as when grading.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json

import pytest
import torch
from conftest import lesson_ids, notebook_path

from helpers.checks import remote
from helpers.checks.run import points_of
from helpers.grading import verdict
from helpers.notebook import load_notebook


def _loopback(namespace):
    agent = remote.Agent(namespace)

    def send(request: str) -> str:
        agent.serve(request)
        return agent.reply

    return agent, send


def _load(kind: str, lesson: str):
    with contextlib.redirect_stdout(io.StringIO()):
        return load_notebook(notebook_path(kind, lesson))


@pytest.mark.parametrize("lesson", lesson_ids())
def test_solutions_pass_and_the_release_fails_on_the_judges_side(lesson):
    _, solved = _loopback(_load("source", lesson))
    _, released = _loopback(_load("release", lesson))
    for grade_id in points_of(lesson):
        outcome = verdict.judge(lesson, grade_id, solved)
        assert outcome.ename is None, (grade_id, outcome.evalue)
        assert ": OK" in outcome.stdout, outcome.stdout
        failed = verdict.judge(lesson, grade_id, released)
        assert failed.ename is not None, grade_id


def test_a_wrong_answer_fails_with_the_checks_own_message():
    namespace = {
        "rnn_cell": lambda x, h, w_ih, w_hh, b_ih, b_hh: torch.sigmoid(
            x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        )
    }
    _, send = _loopback(namespace)
    outcome = verdict.judge("01_intro_to_rnns", "rnn_cell_check", send)
    assert outcome.ename == "CheckFailure"
    assert "sigmoid instead of tanh" in outcome.evalue
    assert "inputs: x (" in outcome.evalue


def test_missing_names_and_learner_exceptions_are_reported():
    _, send = _loopback({})
    outcome = verdict.judge("01_intro_to_rnns", "rnn_cell_check", send)
    assert outcome.ename == "CheckFailure" and "is not defined" in outcome.evalue

    def broken(*args):
        raise KeyError("boom")

    _, send = _loopback({"rnn_cell": broken})
    outcome = verdict.judge("01_intro_to_rnns", "rnn_cell_check", send)
    assert "raised KeyError" in outcome.evalue


def test_kernel_side_tampering_cannot_reach_the_verdict(monkeypatch):
    """What the learner's process patches is not what the judge compares with."""
    wrong = {"rnn_cell": lambda x, h, *p: torch.zeros_like(h)}
    agent, send = _loopback(wrong)
    # a forged answer claiming the check passed is just a value, compared by the judge
    real_serve = agent.serve

    def forging(request: str) -> None:
        real_serve(request)
        if json.loads(request)["op"] == "call":  # the learner's answer replaced
            agent.reply = json.dumps({"value": None, "stdout": "rnn_cell: OK"})

    monkeypatch.setattr(agent, "serve", forging)
    outcome = verdict.judge("01_intro_to_rnns", "rnn_cell_check", send)
    assert outcome.ename == "CheckFailure" and "should be a torch.Tensor" in outcome.evalue


def _channel(answer) -> remote.Channel:
    return remote.Channel(lambda request: answer if isinstance(answer, str) else json.dumps(answer))


def _tensor(dtype="float64", shape=(2,), data=None):
    raw = data if data is not None else bytes(8 * 2)
    node = {"dtype": dtype, "shape": list(shape), "data": base64.b64encode(raw).decode()}
    return {"$tensor": dict(node, device="cpu", requires_grad=False, grad_fn=False, param=False)}


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("not json", "not JSON"),
        ([1, 2], "not an object"),
        ({"nothing": 1}, "no value"),
        ({"value": {"$pickle": "gASV"}}, "unknown tag"),
        ({"value": _tensor(dtype="object")}, "malformed"),
        ({"value": _tensor(shape=(3,))}, "does not match"),
        ({"value": _tensor(shape=(10**9, 10**9))}, "too large"),
        ({"value": {"$float": "1e400"}}, "malformed"),
        ({"value": {"$dict": [[[1], 2]]}}, "not plain"),
        ("[" * 100_000 + "]" * 100_000, "not"),
    ],
)
def test_malformed_answers_are_refused(answer, why):
    with pytest.raises(remote.ChannelError, match=why):
        _channel(answer).request({"op": "globals", "names": ["x"]})


def test_deep_values_are_refused():
    value = 1
    for _ in range(remote.MAX_DEPTH + 5):
        value = [value]
    with pytest.raises(remote.ChannelError, match="too deeply"):
        _channel({"value": value}).request({"op": "globals", "names": ["x"]})


def test_values_round_trip_and_objects_stay_behind():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.RNN(3, 4, batch_first=True)

        def forward(self, x):
            return self.rnn(x)[0]

    model = Model()
    namespace = {"model": model, "t": torch.arange(6.0).reshape(2, 3), "draw": _draw}
    agent, send = _loopback(namespace)
    channel = remote.Channel(send)
    got = channel.global_names(["model", "t", "draw", "absent"])
    assert set(got) == {"model", "t", "draw"}
    assert torch.equal(got["t"], torch.arange(6.0).reshape(2, 3))
    handle = got["model"]
    assert remote.is_module(handle) and type(handle).__name__ == "Model"
    layer = handle.rnn  # a torch.nn layer travels by value: a copy the judge can trust
    assert type(layer) is torch.nn.RNN and layer is not model.rnn
    assert torch.equal(layer.weight_ih_l0, model.rnn.weight_ih_l0)
    x = torch.randn(1, 5, 3)
    with remote.judging(channel):
        assert torch.allclose(handle(x), model(x))
        generator = torch.Generator().manual_seed(3)
        state = generator.get_state()
        got["draw"](generator)  # the generator's state after the call comes back
    assert not torch.equal(generator.get_state(), state)


def _draw(generator: torch.Generator) -> float:
    return float(torch.rand(1, generator=generator))


def test_forged_gradients_from_the_kernel_are_caught(monkeypatch):
    """The kernel's claim of which gradients reach the model is checked against the model's own
    values: a probe rewritten in the kernel to report gradients everywhere is caught."""
    from helpers.checks import core

    namespace = _load("source", "03_time_series_rnn")
    _, send = _loopback(namespace)
    assert verdict.judge("03_time_series_rnn", "SimpleRNN_check", send).ename is None
    real = core._backward_probe

    def forged(model, x, hidden, train):
        found = real(model, x, hidden, train)
        found["grads"] = {k: torch.ones_like(v) for k, v in found["grads"].items()}
        return found

    forged.__module__, forged.__qualname__ = real.__module__, real.__qualname__
    monkeypatch.setattr(core, "_backward_probe", forged)
    outcome = verdict.judge("03_time_series_rnn", "SimpleRNN_check", send)
    assert outcome.ename == "CheckFailure"
    assert "do not match how the output changes" in outcome.evalue
