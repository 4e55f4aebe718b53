"""Long memory, lesson 03's last section: the adding problem, the RNN / GRU /
LSTM race and the course's sweep over the distance to remember.

* ``adding_problem`` makes the task; ``LastStepRegressor`` puts a linear head on ``nn.RNN`` /
  ``nn.GRU`` / ``nn.LSTM``; ``train_regressor`` is a seeded training and evaluation loop with a
  progress bar and a wall-clock budget; ``train_adding`` trains one model on the task;
  ``long_memory_race`` trains the three kinds on the same data for the same budget; ``plot_race``
  draws test loss against training time with the trivial baseline, ``race_table`` prints it.
* The **sweep** (``benchmarks/long_memory.py`` runs it; ``helpers/data/long_memory_sweep.json``
  ships its result): every kind, and a plain RNN with more parameters than the LSTM, at several
  sequence lengths, several seeds each, each model with the learning rate it did best with on a
  short run (a default where no short run left the baseline). ``shipped_sweep`` reads the result,
  ``plot_sweep`` draws the final test loss against the distance, ``sweep_table`` prints it with
  each model's sensitivity to the first marked value.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import torch
from torch import nn

from helpers import validate
from helpers.course import data_dir
from helpers.runtime import get_device
from helpers.training import cpu_threads, model_device, optimizer_step, progress_bar

#: Test MSE of the adding problem's trivial answer (always predict 1.0, the mean of the target):
#: the target is the sum of two independent U(0, 1) values, whose variance is 2 / 12.
ADDING_BASELINE_MSE = 1.0 / 6.0
RECURRENT_KINDS = ("RNN", "GRU", "LSTM")

Batch = tuple[torch.Tensor, torch.Tensor]


def adding_problem(
    n_sequences: int,
    seq_length: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Batch:
    """The adding problem, a task that needs long memory (this version: Le, Jaitly & Hinton,
    2015; the original is Hochreiter & Schmidhuber's, 1997).

    Each sequence has two channels: random values drawn from U(0, 1), and a marker that is 1 at
    exactly two steps (one in the first half of the sequence, one in the second) and 0 elsewhere.
    The target, given only at the end, is the sum of the two marked values. The first marked value
    can be up to ``seq_length - 1`` steps back, and everything after it is a distraction. Always
    answering 1.0 (the mean) scores ``ADDING_BASELINE_MSE`` = 1/6.

    Returns:
        ``x`` of shape ``(n_sequences, seq_length, 2)`` (channel 0: values, channel 1: markers)
        and ``y`` of shape ``(n_sequences, 1)``, float32 on ``device`` (default: CPU).
    """
    validate.integer("n_sequences", n_sequences)
    validate.integer("seq_length", seq_length, 2)
    half = seq_length // 2
    values = torch.rand(n_sequences, seq_length, generator=generator)
    first = torch.randint(0, half, (n_sequences,), generator=generator)
    second = torch.randint(half, seq_length, (n_sequences,), generator=generator)
    markers = torch.zeros(n_sequences, seq_length)
    rows = torch.arange(n_sequences)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = torch.stack([values, markers], dim=-1)
    y = (values * markers).sum(dim=1, keepdim=True)
    if device is not None:
        x, y = x.to(device), y.to(device)
    return x, y


class LastStepRegressor(nn.Module):
    """A recurrent layer of the given kind read out by a linear layer after the last step.

    Args:
        kind: ``"RNN"`` (tanh), ``"GRU"`` or ``"LSTM"``: the ``torch.nn`` layer to use.
        input_size, hidden_size, output_size: sizes; the layer is ``batch_first``.

    ``forward(x)``: ``x`` ``(batch, seq, input_size)`` -> ``(batch, output_size)``.
    """

    def __init__(self, kind: str, input_size: int, hidden_size: int, output_size: int = 1):
        super().__init__()
        if kind not in RECURRENT_KINDS:
            raise ValueError(f"kind must be one of {RECURRENT_KINDS}, got {kind!r}")
        validate.integers(input_size=input_size, hidden_size=hidden_size, output_size=output_size)
        self.kind = kind
        self.recurrent = getattr(nn, kind)(input_size, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.recurrent(x)
        return self.head(outputs[:, -1])


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass
class RegressorHistory:
    """What ``train_regressor`` measured: one entry per evaluation (the first at step 0).

    ``seconds`` counts training time only (evaluations are not on the clock), so curves of
    different models can be compared against time.
    """

    name: str
    n_parameters: int
    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    #: The trained model (set by ``long_memory_race``), for measurements after the race.
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def final_test_loss(self) -> float:
        return self.test_loss[-1]

    @property
    def best_test_loss(self) -> float:
        return min(self.test_loss)


def train_regressor(
    model: nn.Module,
    make_batch: Callable[[torch.Generator], Batch],
    test_set: Batch,
    *,
    n_steps: int,
    lr: float = 0.01,
    eval_every: int = 50,
    time_budget_s: float | None = None,
    clip: float | None = 1.0,
    seed: int = 0,
    name: str = "model",
    progress: bool = True,
    threads: int | None = 1,
) -> RegressorHistory:
    """Train ``model`` with Adam on mean squared error and evaluate it on a fixed test set.

    Args:
        model: maps ``x`` to predictions shaped like ``y`` (e.g. a ``LastStepRegressor``); it is
            trained on the device it is on.
        make_batch: ``make_batch(generator) -> (x, y)`` draws one fresh training batch; it is
            called with a ``torch.Generator`` seeded with ``seed``, so two runs with the same seed
            see the same batches.
        test_set: ``(x, y)`` held-out data, evaluated at step 0, every ``eval_every`` steps and
            at the end.
        n_steps: the most training steps; ``time_budget_s``: stop earlier once this many seconds
            of training have passed (``None``: no time limit).
        clip: gradient norm clipping (``None`` turns it off).
        threads: CPU threads while training on the CPU (see ``cpu_threads``; ``None``: as set).

    Returns:
        A ``RegressorHistory``.
    """
    validate.integers(n_steps=n_steps, eval_every=eval_every)
    validate.positive("time_budget_s", time_budget_s, optional=True)
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x_test, y_test = (t.to(device) for t in test_set)
    history = RegressorHistory(name, count_parameters(model))
    model.train()

    def evaluate(step: int, elapsed: float, train_loss: float) -> float:
        model.eval()
        with torch.no_grad():
            loss = float(nn.functional.mse_loss(model(x_test), y_test))
        model.train()
        history.steps.append(step)
        history.seconds.append(elapsed)
        history.test_loss.append(loss)
        history.train_loss.append(train_loss)
        return loss

    with cpu_threads(threads, device):
        evaluate(0, 0.0, float("nan"))
        elapsed, running, count = 0.0, 0.0, 0
        bar = progress_bar(range(1, n_steps + 1), desc=name, progress=progress, leave=True)
        for step in bar:
            x, y = (t.to(device) for t in make_batch(generator))
            started = time.perf_counter()
            loss = nn.functional.mse_loss(model(x), y)
            # loss.item() inside also waits for the GPU, so the clock below is honest
            running += optimizer_step(optimizer, loss, model.parameters(), clip)
            elapsed += time.perf_counter() - started
            count += 1
            out_of_time = time_budget_s is not None and elapsed >= time_budget_s
            if step % eval_every == 0 or step == n_steps or out_of_time:
                test_loss = evaluate(step, elapsed, running / count)
                running, count = 0.0, 0
                bar.set_postfix(test_mse=f"{test_loss:.4f}", seconds=f"{elapsed:.0f}")
            if out_of_time:
                break
        bar.close()
    return history


def train_adding(
    kind: str,
    seq_length: int,
    *,
    hidden_size: int = 32,
    n_steps: int = 1500,
    batch_size: int = 64,
    lr: float = 0.01,
    eval_every: int = 50,
    n_test: int = 1000,
    time_budget_s: float | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    threads: int | None = 1,
    name: str | None = None,
) -> RegressorHistory:
    """Train one ``LastStepRegressor`` of ``kind`` on the adding problem with sequences of
    ``seq_length`` steps (see ``long_memory_race`` for the settings).

    The model starts from ``torch.manual_seed(seed)``, draws its batches from a generator seeded
    with ``seed`` and is scored on ``n_test`` held-out sequences drawn with seed
    ``10_000 + seed``: two calls with the same seed and length see the same data.

    Returns:
        The ``RegressorHistory``, with the trained model in its ``model`` field.
    """
    if kind not in RECURRENT_KINDS:
        raise ValueError(f"kind must be one of {RECURRENT_KINDS}, got {kind!r}")
    validate.integer("seq_length", seq_length, 2)
    validate.integers(batch_size=batch_size, n_test=n_test)
    device = torch.device(device) if device is not None else get_device()
    test_set = adding_problem(
        n_test, seq_length, generator=torch.Generator().manual_seed(10_000 + seed)
    )

    def make_batch(generator: torch.Generator) -> Batch:
        return adding_problem(batch_size, seq_length, generator=generator)

    torch.manual_seed(seed)
    model = LastStepRegressor(kind, input_size=2, hidden_size=hidden_size).to(device)
    history = train_regressor(
        model,
        make_batch,
        test_set,
        n_steps=n_steps,
        lr=lr,
        eval_every=eval_every,
        time_budget_s=time_budget_s,
        seed=seed,
        name=name or f"{kind} (T={seq_length})",
        progress=progress,
        threads=threads,
    )
    history.model = model
    return history


def long_memory_race(
    seq_length: int,
    *,
    kinds: Sequence[str] = RECURRENT_KINDS,
    **settings,
) -> dict[str, RegressorHistory]:
    """Train ``nn.RNN``, ``nn.GRU`` and ``nn.LSTM`` of the same hidden size on the adding problem.

    Every model starts from ``torch.manual_seed(seed)``, trains on the same sequence of batches
    (``batch_size`` fresh sequences of length ``seq_length`` per step) for the same budget
    (``n_steps`` steps, and at most ``time_budget_s`` seconds each when given), and is scored on
    the same ``n_test`` held-out sequences. ``settings`` are ``train_adding``'s: ``hidden_size``
    (32), ``n_steps`` (1500), ``batch_size`` (64), ``lr`` (0.01), ``eval_every`` (50),
    ``n_test`` (1000), ``time_budget_s``, ``seed`` (0), ``device``, ``progress``, ``threads`` (1).

    Returns:
        ``{kind: RegressorHistory}`` in the order of ``kinds``, each with its trained model.
    """
    for kind in kinds:
        if kind not in RECURRENT_KINDS:
            raise ValueError(f"kinds must be taken from {RECURRENT_KINDS}, got {kind!r}")
    return {kind: train_adding(kind, seq_length, **settings) for kind in kinds}


def plot_race(
    histories: Mapping[str, RegressorHistory],
    baseline: float = ADDING_BASELINE_MSE,
    ax=None,
    title: str | None = None,
):
    """Test loss against training time for each model, with the trivial baseline dashed."""
    if not histories:
        raise ValueError("histories is empty: expected at least one name -> RegressorHistory")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    for name, history in histories.items():
        ax.semilogy(history.seconds, history.test_loss, marker=".", label=name)
    ax.axhline(
        baseline,
        color="grey",
        linestyle="--",
        label=f"trivial baseline (always 1.0): {baseline:.3f}",
    )
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("test MSE")
    ax.set_title(title or "Adding problem: test loss against training time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return ax


def race_table(
    histories: Mapping[str, RegressorHistory], baseline: float = ADDING_BASELINE_MSE
) -> str:
    """A plain-text table: parameters, steps, seconds, final and best test MSE, vs the baseline."""
    lines = [
        f"{'model':<6} {'params':>7} {'steps':>6} {'seconds':>8} {'final MSE':>10} "
        f"{'best MSE':>9} {'final/baseline':>15}"
    ]
    for name, h in histories.items():
        lines.append(
            f"{name:<6} {h.n_parameters:>7} {h.steps[-1]:>6} {h.seconds[-1]:>8.1f} "
            f"{h.final_test_loss:>10.4f} {h.best_test_loss:>9.4f} "
            f"{h.final_test_loss / baseline:>15.3f}"
        )
    lines.append(f"baseline (always predict 1.0): {baseline:.4f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The sweep over the distance to remember (benchmarks/long_memory.py; shipped in helpers/data)
# --------------------------------------------------------------------------------------------

#: The course's measurement of the sweep, made by ``benchmarks/long_memory.py --json``.
SWEEP_RESULT = data_dir() / "long_memory_sweep.json"
_RUN_FIELDS = ("model", "seq_length", "seed", "lr", "final_test_mse", "marker_sensitivity")


def shipped_sweep(path=None) -> dict:
    """The shipped measurement of the sweep (``SWEEP_RESULT``), as a dict.

    Its ``runs`` hold one record per model, sequence length and seed (``final_test_mse``,
    ``best_test_mse``, ``lr``, ``marker_sensitivity``: the derivative of the trained model's
    answer with respect to the first and the second marked value, averaged over held-out
    sequences); ``models`` each model's kind, hidden size and parameters; ``settings`` how it
    was measured.
    """
    path = SWEEP_RESULT if path is None else path
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"expected the sweep's measurement as JSON at {path}: {exc}") from None
    _check_sweep(record, path)
    return record


def _check_sweep(record, where) -> None:
    if not isinstance(record, dict) or not {"settings", "models", "runs", "baseline_mse"} <= set(
        record
    ):
        raise ValueError(
            f"{where}: expected a sweep record with settings, models, runs and baseline_mse"
        )
    for run in record["runs"]:
        missing = [k for k in _RUN_FIELDS if k not in run]
        if missing or run["model"] not in record["models"]:
            raise ValueError(
                f"{where}: a run should have {', '.join(_RUN_FIELDS)} and a model listed in "
                f"models; got {run!r}"
            )


def sweep_summary(record: Mapping) -> dict[str, dict[int, dict[str, list[float]]]]:
    """``{model: {seq_length: {"ratio": [...], "first": [...], "second": [...]}}}``: per seed,
    the final test MSE over the baseline and the sensitivity to each marked value, models and
    lengths in the record's order."""
    _check_sweep(record, "sweep record")
    baseline = record["baseline_mse"]
    summary: dict[str, dict[int, dict[str, list[float]]]] = {m: {} for m in record["models"]}
    for run in record["runs"]:
        point = summary[run["model"]].setdefault(
            run["seq_length"], {"ratio": [], "first": [], "second": []}
        )
        point["ratio"].append(run["final_test_mse"] / baseline)
        point["first"].append(run["marker_sensitivity"][0])
        point["second"].append(run["marker_sensitivity"][1])
    for model in summary:
        summary[model] = dict(sorted(summary[model].items()))
    return summary


def _label(record: Mapping, model: str) -> str:
    info = record["models"][model]
    return f"{model} (hidden {info['hidden_size']}, {info['n_parameters']:,} parameters)"


def plot_sweep(record: Mapping, ax=None, title: str | None = None):
    """Final test MSE over the baseline against the sequence length, one line per model through
    the mean over seeds, each seed a dot; the baseline (a ratio of 1) dashed."""
    summary = sweep_summary(record)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.2))
    for model, points in summary.items():
        lengths = list(points)
        means = [statistics.fmean(p["ratio"]) for p in points.values()]
        (line,) = ax.semilogy(lengths, means, marker="o", label=_label(record, model))
        for length, p in points.items():
            ax.scatter([length] * len(p["ratio"]), p["ratio"], s=12, color=line.get_color())
    ax.axhline(1.0, color="grey", linestyle="--", label="trivial baseline (always 1.0)")
    lengths = sorted({run["seq_length"] for run in record["runs"]})
    ax.set_xticks(lengths)
    ax.set_xlabel("sequence length T (the first marked value is up to T - 1 steps back)")
    ax.set_ylabel("final test MSE / baseline")
    seeds = len(record["settings"].get("seeds", [])) or "several"
    ax.set_title(title or f"Adding problem: final loss against distance ({seeds} seeds each)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def _spread(values: Sequence[float], digits: int) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def sweep_table(record: Mapping) -> str:
    """The sweep as two plain-text tables (mean over seeds, lowest to highest in brackets): the
    final test MSE over the baseline, and the sensitivity of the trained model's answer to the
    first marked value; then the learning rate each model trained with at each length."""
    summary = sweep_summary(record)
    lengths = sorted({run["seq_length"] for run in record["runs"]})
    width = max(len(m) for m in summary) + 2
    column = 22

    def table(heading: str, key: str, digits: int) -> list[str]:
        lines = [
            heading,
            f"{'model':<{width}}" + "".join(f"{f'T = {t}':>{column}}" for t in lengths),
        ]
        for model, points in summary.items():
            cells = [_spread(points[t][key], digits) if t in points else "-" for t in lengths]
            lines.append(f"{model:<{width}}" + "".join(f"{c:>{column}}" for c in cells))
        return lines

    lines = table("final test MSE / baseline (1 = answering the mean)", "ratio", 3)
    lines += [""]
    lines += table(
        "d answer / d first marked value (1 = uses it fully, 0 = ignores it)", "first", 2
    )
    rates: dict[str, dict[int, set[float]]] = {}
    for run in record["runs"]:
        rates.setdefault(run["model"], {}).setdefault(run["seq_length"], set()).add(run["lr"])
    lines += [
        "",
        "learning rate (the best of a short run on another seed, or the default where no short "
        "run left the baseline)",
    ]
    for model, by_length in rates.items():
        cells = ["/".join(f"{r:g}" for r in sorted(by_length.get(t, ()))) or "-" for t in lengths]
        lines.append(f"{model:<{width}}" + "".join(f"{c:>{column}}" for c in cells))
    return "\n".join(lines)
