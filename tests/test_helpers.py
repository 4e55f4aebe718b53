"""Unit tests of the shared helpers: run-time settings, the notebook loader, the check machinery."""

from __future__ import annotations

import contextlib
import io

import nbformat
import pytest
import torch

import helpers
from helpers import validate
from helpers.checks.core import (
    Cause,
    CheckFailure,
    after,
    assert_close,
    assert_equal_values,
    call,
    get,
)
from helpers.experiments import gradient_norms_through_time, orthogonal
from helpers.plotting import plot_gradient_norms

# --- runtime -------------------------------------------------------------------------------


def test_seed_everything_is_reproducible():
    helpers.seed_everything(3)
    a = torch.randn(4)
    gen = helpers.seed_everything(3)
    assert torch.equal(a, torch.randn(4))
    expected = torch.randn(2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.randn(2, generator=gen), expected)


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_seed_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        helpers.seed_everything(bad)


def test_fast_mode(monkeypatch):
    monkeypatch.setenv("COURSE_FAST", "1")
    assert helpers.is_fast() and helpers.fast_or_full(1, 2) == 1
    monkeypatch.setenv("COURSE_FAST", "0")
    assert not helpers.is_fast() and helpers.fast_or_full(1, 2) == 2
    monkeypatch.delenv("COURSE_FAST")
    assert not helpers.is_fast()


def test_device(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert helpers.get_device().type == expected
    assert helpers.get_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        helpers.get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            helpers.get_device("cuda")


def test_data_and_image_paths():
    assert helpers.data_path("tinyshakespeare.txt").stat().st_size == 1_115_394
    assert helpers.image_path("unrolled_rnn").suffix == ".png"
    with pytest.raises(ValueError, match="available"):
        helpers.data_path("missing.txt")
    with pytest.raises(ValueError, match="make images"):
        helpers.image_path("no_such_picture")


def test_data_files_match_their_provenance_note():
    import hashlib

    digest = hashlib.sha256(helpers.data_path("tinyshakespeare.txt").read_bytes()).hexdigest()
    note = (helpers.DATA_DIR / "README.md").read_text()
    assert digest in note


# --- notebook loader -----------------------------------------------------------------------


def _notebook(tmp_path, cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    path = tmp_path / "demo.ipynb"
    nbformat.write(nb, path)
    return path


def test_loader_skips_training_and_test_cells(tmp_path):
    training = nbformat.v4.new_code_cell("trained = True")
    training.metadata["tags"] = ["training"]
    test_cell = nbformat.v4.new_code_cell("assert False")
    test_cell.metadata["nbgrader"] = {
        "grade": True,
        "solution": False,
        "grade_id": "t",
        "points": 1,
        "locked": True,
        "schema_version": 3,
    }
    path = _notebook(
        tmp_path,
        [
            nbformat.v4.new_markdown_cell("# title"),
            nbformat.v4.new_code_cell("%matplotlib inline\nimport math\nvalue = math.sqrt(16)"),
            training,
            test_cell,
            nbformat.v4.new_code_cell("raise RuntimeError('demo broke')"),
            nbformat.v4.new_code_cell("after = value + 1\ntorch_default = 1"),
        ],
    )
    ns = helpers.load_notebook(path)
    assert ns["value"] == 4 and ns["after"] == 5
    assert "trained" not in ns
    assert [type(e.error).__name__ for e in ns.errors] == ["RuntimeError"]
    assert "demo broke" in str(ns.errors[0])


def test_loader_restores_torch_defaults(tmp_path):
    path = _notebook(
        tmp_path,
        [
            nbformat.v4.new_code_cell(
                "import torch\n"
                "torch.set_default_dtype(torch.float64)\n"
                "torch.set_grad_enabled(False)"
            )
        ],
    )
    helpers.load_notebook(path)
    assert torch.get_default_dtype() == torch.float32 and torch.is_grad_enabled()


def test_loader_bad_input(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        helpers.load_notebook(tmp_path / "missing.ipynb")
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable notebook"):
        helpers.load_notebook(broken)


# --- check machinery -----------------------------------------------------------------------

X = torch.arange(6, dtype=torch.float64).reshape(2, 3)


def test_assert_close_passes_and_reports_largest_difference():
    assert assert_close("ex", X + 1e-12, X) <= 1e-11


@pytest.mark.parametrize(
    ("got", "match"),
    [
        (X.numpy(), "should be a torch.Tensor, got numpy.ndarray"),
        (X.float(), "dtype torch.float32, expected torch.float64"),
        (X.T, r"shape \(3, 2\), expected \(2, 3\)"),
        (X.clone().fill_(float("nan")), "contains nan at index"),
        (
            X + torch.tensor([[0, 0, 0], [0, 0.5, 0]], dtype=torch.float64),
            r"first mismatch at index \(1, 1\), got 4.5, expected 4",
        ),
    ],
)
def test_assert_close_failures_teach(got, match):
    with pytest.raises(CheckFailure, match=match):
        assert_close("ex", got, X, inputs={"x": X})


def test_assert_close_names_the_likely_cause():
    wrong = X * 2
    with pytest.raises(CheckFailure, match="likely cause: doubled"):
        assert_close("ex", wrong, X, causes=[Cause("unrelated", X + 7), Cause("doubled", X * 2)])


def test_always_equal_object_cannot_pass():
    class AlwaysEqual(torch.Tensor):
        def __eq__(self, other):
            return True

    class Liar:
        shape = X.shape
        dtype = X.dtype

        def __eq__(self, other):
            return True

    for fake in (Liar(), X.as_subclass(AlwaysEqual) * 0):
        with pytest.raises(CheckFailure):
            assert_close("ex", fake, X)


def test_call_reports_errors_mutation_and_missing_code():
    def mutates(x):
        x.add_(1)
        return x

    def unsolved(x):
        raise NotImplementedError()

    def broken(x):
        return x @ torch.zeros(5, 5, dtype=x.dtype)

    with pytest.raises(CheckFailure, match="in place"):
        call("ex", mutates, X)
    with pytest.raises(CheckFailure, match="not implemented yet"):
        call("ex", unsolved, X)
    with pytest.raises(CheckFailure, match="likely cause: a weight used the wrong way round"):
        call("ex", broken, X, inputs={"x": X})
    assert torch.equal(X, torch.arange(6, dtype=torch.float64).reshape(2, 3))


def test_assert_equal_values_checks_type():
    assert_equal_values("ex", (1, 2), (1, 2))
    with pytest.raises(CheckFailure, match="expected"):
        assert_equal_values("ex", [1, 2], (1, 2))
    with pytest.raises(CheckFailure):
        assert_equal_values("ex", (1.0, 2), (1, 2))


def test_get_and_after():
    with pytest.raises(CheckFailure, match="`thing` is not defined"):
        get({}, "thing")

    def failing():
        raise CheckFailure("later exercise wrong")

    with pytest.raises(CheckFailure, match="fix first_step first"):
        after("first_step", failing, failing)
    with pytest.raises(CheckFailure) as info:
        after("first_step", failing, lambda: None)
    assert "fix first_step" not in str(info.value)


# --- experiments and plots ------------------------------------------------------------------


def test_orthogonal_matrix():
    q = orthogonal(6, torch.Generator().manual_seed(0))
    assert torch.allclose(q @ q.T, torch.eye(6, dtype=torch.float64), atol=1e-12)


def test_gradient_norms_follow_the_weight_scale():
    def cell(x, h, w_ih, w_hh, b_ih, b_hh):
        return torch.rnn_tanh_cell(x, h, w_ih, w_hh, b_ih, b_hh)

    small = gradient_norms_through_time(cell, 0.5, seq_length=10)
    large = gradient_norms_through_time(cell, 1.5, seq_length=10)
    assert small.shape == (10,) and small[0] == 1
    assert small[-1] == pytest.approx(0.5**9, rel=1e-3)
    assert large[-1] == pytest.approx(1.5**9, rel=1e-3)
    with pytest.raises(ValueError, match="positive"):
        gradient_norms_through_time(cell, 0.0)
    with pytest.raises(ValueError, match="seq_length must be an int >= 1"):
        gradient_norms_through_time(cell, 1.0, seq_length=0)


def test_plot_gradient_norms_bad_input():
    with pytest.raises(ValueError, match="empty"):
        plot_gradient_norms({})
    with pytest.raises(ValueError, match="1-D"):
        plot_gradient_norms({"a": torch.zeros(2, 2)})
    with contextlib.redirect_stdout(io.StringIO()):
        ax = plot_gradient_norms({"a": torch.ones(3)})
    assert ax.get_yscale() == "log"


def test_grading_runs_never_share_a_kernel_user():
    """Two grading runs started at the same moment each claim their own kernel user ids."""
    from helpers.grading import sandbox

    first, second = sandbox.spare_uids(2), sandbox.spare_uids(2)
    assert len(set(first)) == 2 and len(set(second)) == 2
    assert not set(first) & set(second)


# --- lesson 02's use of gradient_norms_through_time: the LSTM and its cell state ----------------


def _torch_lstm_step(x, state, params):
    return tuple(torch.lstm_cell(x, state, *params))


def test_gradient_norms_rnn_default_is_unchanged_by_the_lstm_options():
    def cell(x, h, w_ih, w_hh, b_ih, b_hh):
        return torch.rnn_tanh_cell(x, h, w_ih, w_hh, b_ih, b_hh)

    plain = gradient_norms_through_time(cell, 0.7, seq_length=12, seed=3)
    explicit = gradient_norms_through_time(cell, 0.7, 12, seed=3, kind="rnn", wrt="h")
    assert torch.equal(plain, explicit)


@pytest.mark.parametrize("forget_bias", [-1.0, 0.0, 1.0, 2.5])
def test_lstm_cell_state_gradient_is_the_forget_gate_per_step(forget_bias):
    """With tiny recurrent weights only the LTM's direct path is left: f = sigmoid(bias) a step."""
    norms = gradient_norms_through_time(
        _torch_lstm_step,
        1e-4,
        seq_length=15,
        hidden_size=5,
        kind="lstm",
        wrt="c",
        forget_bias=forget_bias,
    )
    f = torch.sigmoid(torch.tensor(forget_bias, dtype=torch.float64))
    assert norms.shape == (15,) and norms.dtype == torch.float64 and norms[0] == 1
    assert torch.allclose(norms, f ** torch.arange(15, dtype=torch.float64), rtol=1e-3)


def test_lstm_gradient_norms_are_seeded_and_follow_the_forget_bias():
    kwargs = {"seq_length": 30, "hidden_size": 6, "kind": "lstm"}
    a = gradient_norms_through_time(_torch_lstm_step, 0.7, wrt="h", seed=4, **kwargs)
    b = gradient_norms_through_time(_torch_lstm_step, 0.7, wrt="h", seed=4, **kwargs)
    assert torch.equal(a, b)
    low = gradient_norms_through_time(_torch_lstm_step, 0.7, wrt="c", **kwargs)
    high = gradient_norms_through_time(_torch_lstm_step, 0.7, wrt="c", forget_bias=1.0, **kwargs)
    assert high[-1] > 100 * low[-1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "gru"}, "kind must be"),
        ({"wrt": "x"}, "wrt must be"),
        ({"wrt": "c"}, "a plain RNN has no cell state"),
        ({"forget_bias": 1.0}, "a plain RNN has no forget gate"),
        ({"kind": "lstm", "forget_bias": float("nan")}, "finite"),
        ({"kind": "lstm", "hidden_size": 0}, "hidden_size must be an int >= 1"),
    ],
)
def test_gradient_norms_reject_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gradient_norms_through_time(_torch_lstm_step, 1.0, **kwargs)


def test_lstm_experiment_params_layout():
    from helpers.experiments import lstm_experiment_params

    generator = torch.Generator().manual_seed(0)
    w_ih, w_hh, b_ih, b_hh = lstm_experiment_params(3, 2, 0.5, 1.5, generator)
    assert (w_ih.shape, w_hh.shape, b_ih.shape, b_hh.shape) == ((12, 2), (12, 3), (12,), (12,))
    assert b_ih[3:6].eq(1.5).all() and b_ih[:3].eq(0).all() and b_ih[6:].eq(0).all()
    assert b_hh.eq(0).all()
    for k in range(4):
        block = w_hh[3 * k : 3 * k + 3]
        assert torch.allclose(block @ block.T, 0.25 * torch.eye(3, dtype=torch.float64))


def test_gradient_norms_reject_a_cell_of_the_wrong_kind():
    def rnn(x, h, w_ih, w_hh, b_ih, b_hh):
        return torch.rnn_tanh_cell(x, h, w_ih, w_hh, b_ih, b_hh)

    with pytest.raises(ValueError, match="pair"):
        gradient_norms_through_time(lambda x, s, p: s[0], 1.0, kind="lstm")
    with pytest.raises(ValueError, match="shape"):
        gradient_norms_through_time(lambda x, s, p: (x, s[1]), 1.0, kind="lstm")
    with pytest.raises(ValueError, match="does not depend"):
        gradient_norms_through_time(lambda x, s, p: (s[0] * 1, s[1] * 1), 1.0, kind="lstm", wrt="c")
    assert gradient_norms_through_time(rnn, 1.0, seq_length=3).shape == (3,)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: validate.integer("size", 0), "size must be an int >= 1, got 0"),
        (lambda: validate.integer("size", True), "size must be an int >= 1, got True"),
        (lambda: validate.integer("size", 2.0), "size must be an int >= 1, got 2.0"),
        (lambda: validate.integer("n", 1, 2), "n must be an int >= 2, got 1"),
        (lambda: validate.integer("t", "3", optional=True), "t must be an int >= 1 or None"),
        (lambda: validate.integers(a=1, b=0), "b must be an int >= 1, got 0"),
        (lambda: validate.positive("lr", 0.0), "lr must be a positive number, got 0.0"),
        (lambda: validate.positive("lr", float("nan")), "lr must be a positive number, got nan"),
        (lambda: validate.positive("lr", float("inf")), "lr must be a positive number, got inf"),
        (lambda: validate.positive("lr", "1e-3"), "lr must be a positive number, got '1e-3'"),
        (lambda: validate.positives(a=1, b=-1), "b must be a positive number, got -1"),
        (lambda: validate.fraction("p", 1.0), "p must be a number strictly between 0 and 1"),
        (lambda: validate.fraction("p", 1.5, closed=True), "p must be a number in \\[0, 1\\]"),
        (lambda: validate.function("f", 3, "(x)"), "f must be a function \\(x\\), got int"),
        (lambda: validate.function("f", 3, optional=True), "f must be a function or None"),
    ],
)
def test_validate_names_the_argument_and_what_was_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_validate_returns_what_it_accepts():
    assert validate.integer("n", 0, 0) == 0
    assert validate.integer("n", None, optional=True) is None
    assert validate.positive("lr", 1e-3) == 1e-3
    assert validate.positive("t", None, optional=True) is None
    assert validate.fraction("p", 0.0, closed=True) == 0.0
    assert validate.fraction("p", 0.5) == 0.5
    assert validate.function("f", len) is len
    assert validate.function("f", None, optional=True) is None
