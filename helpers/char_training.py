"""Training, evaluating and saving a character-level language model (lesson 04).

The model is the learner's own: anything with ``forward(x, hidden) -> (logits, hidden)`` for
integer input ``x (batch, seq)`` and logits ``(batch, seq, vocab)``, plus ``init_hidden(batch)``.
The batches come from the learner's own ``get_batches``, and each update is the learner's own
``train_step(model, optimizer, x, y, hidden, clip_norm) -> (loss, hidden)`` (forward, loss,
zeroed gradients, backward, clipping, step, detached state: truncated back-propagation through
time). This module adds what every training run needs around them:

* the **carried state**: each epoch starts from ``init_hidden``, and the state ``train_step``
  returns goes into the next batch (row r of a batch continues row r of the one before);
* **AdamW** with a linear warm-up and a cosine decay, the clipping norm of ``TrainConfig``;
* a **step or wall-clock budget** (``max_steps`` / ``budget_seconds``), a tqdm progress bar
  showing the training loss, validation loss in nats and bits per character, a loss-curve plot;
* **checkpoints** holding the model's weights, its vocabulary and its hyper-parameters.

Validation loss is measured two ways (both in nats per character, the mean cross-entropy):

* ``"stream"``: the validation text cut into a few long contiguous streams, read in chunks with the
  hidden state carried, so almost every character is predicted with all the context before it.
  This is how the model is used when it writes text.
* ``"win64"``: independent 64-character windows, each from a zero state, every position scored
  (the protocol of nanoGPT's small CPU configuration, for comparison with it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from helpers import course, validate
from helpers.precision import check_precision, precision_context, resolve_precision
from helpers.text import Vocab
from helpers.training import StepHistory, cpu_threads, model_device, progress_bar

LN2 = math.log(2.0)

#: The lesson's model (CharRNN's keyword arguments): one LSTM layer of 384 units, dropout 0.4.
#: Tuned on a 2-core CPU for budgets of 3 and 10 minutes (benchmarks/README.md): 256
#: units without dropout learn as fast in 3 minutes but start memorising the 1 MB of Tiny
#: Shakespeare after about 5 passes over it (10 minutes: 1.53 nats/char, worse than at 3).
MODEL_CONFIG = {"hidden_size": 384, "num_layers": 1, "dropout": 0.4}

#: Name of the checkpoint lesson 04 loads, shipped in the course package (helpers/data).
CHECKPOINT_NAME = course.CHECKPOINT_NAME
LESSON = course.CHECKPOINT_LESSON
_FORMAT = "rnn-course-char-model/1"


@dataclass
class TrainConfig:
    """How to train (the defaults are the lesson's configuration).

    Attributes:
        batch_size: sequences per batch (rows carried in parallel).
        seq_length: characters per row and batch: how far back gradients flow.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW's decoupled weight decay, on weight matrices only.
        warmup_steps: steps of linear warm-up from 0 to ``lr``.
        final_lr_fraction: the cosine decay ends at ``lr * final_lr_fraction``.
        clip_norm: gradients are rescaled so their global norm is at most this.
        max_steps: stop after this many optimiser steps (``None``: no limit).
        budget_seconds: stop after this much training time (``None``: no limit). Time spent on
            validation during training is not counted. The learning rate decays with whichever
            of steps or time is the further along.
        eval_every: validate every this many steps (0: never during training).
        eval_chars: validate on the first this many validation characters during training
            (``None``: all of them). The final figures use ``evaluate`` on the whole text.
        seed: seeds the random start offset of each epoch and dropout.
        threads: CPU threads PyTorch may use while training (``None``: leave torch's setting,
            which uses every core). Measured on a quiet 2-core machine: 20k characters/s with 1
            thread, 33k with 2; on a busy machine one thread can be the faster choice.
        precision: ``"auto"`` (bf16 under ``torch.autocast`` where the device computes it
            natively: a CPU with AVX-512 bf16 or AMX and oneDNN, or a CUDA GPU with bf16;
            float32 elsewhere), ``"bf16"`` or ``"fp32"``. The weights, the optimiser and
            ``evaluate`` stay in float32 either way.
    """

    batch_size: int = 16
    seq_length: int = 64
    lr: float = 2e-2
    weight_decay: float = 0.05
    warmup_steps: int = 100
    final_lr_fraction: float = 0.05
    clip_norm: float = 1.0
    max_steps: int | None = None
    budget_seconds: float | None = None
    eval_every: int = 0
    eval_chars: int | None = 50_000
    seed: int = 0
    threads: int | None = None
    precision: str = "auto"

    def __post_init__(self):
        check_precision(self.precision)
        validate.integers(batch_size=self.batch_size, seq_length=self.seq_length)
        validate.positives(lr=self.lr, clip_norm=self.clip_norm)
        if self.max_steps is None and self.budget_seconds is None:
            raise ValueError("give max_steps or budget_seconds (or both): training needs an end")
        validate.integer("max_steps", self.max_steps, optional=True)
        validate.positive("budget_seconds", self.budget_seconds, optional=True)
        validate.fraction("final_lr_fraction", self.final_lr_fraction, closed=True)
        validate.integer("threads", self.threads, optional=True)


@dataclass
class CharHistory(StepHistory):
    """What happened during training (losses in nats per character).

    Per step (from ``StepHistory``): ``train_loss``, ``learning_rates``, ``steps``,
    ``train_seconds``; per validation: ``val_steps``, ``val_loss``. ``loop_seconds``: the
    loop's wall time without validation (batches, schedule, checks and progress bar included);
    ``precision``: ``"bf16"`` or ``"fp32"``, what the updates ran in.
    """

    val_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    epochs: int = 0
    chars_per_s: float = 0.0
    stopped_by: str = ""
    loop_seconds: float = 0.0
    precision: str = ""

    @property
    def final_train_loss(self) -> float:
        """Mean training loss of the last 50 steps."""
        tail = self.train_loss[-50:]
        return float(np.mean(tail)) if tail else float("nan")


def bits_per_char(nats: float) -> float:
    """Convert a loss in nats per character (natural log) to bits per character (log base 2)."""
    return nats / LN2


def _attached(hidden) -> bool:
    """Whether any tensor of a hidden state still belongs to an autograd graph."""
    if isinstance(hidden, torch.Tensor):
        return hidden.requires_grad
    if isinstance(hidden, tuple | list):
        return any(_attached(h) for h in hidden)
    raise ValueError(
        f"train_step returned the hidden state as a {type(hidden).__name__}; expected the "
        "model's state, e.g. the tuple (h, c) of an LSTM"
    )


def _checked_step(loss, hidden, step: int):
    """The float loss of a ``train_step`` result, after checking the state it returned."""
    if _attached(hidden):
        raise ValueError(
            f"train_step returned a hidden state that is still attached to the graph (step "
            f"{step}); detach it before returning it, or every later backward pass would run "
            "back through all the batches since the start"
        )
    if isinstance(loss, torch.Tensor):
        raise ValueError("train_step returned the loss as a tensor; return loss.item()")
    return float(loss)


def _to_device(hidden, device):
    if isinstance(hidden, torch.Tensor):
        return hidden.to(device)
    return type(hidden)(_to_device(h, device) for h in hidden)


def _as_indices(data, name: str) -> np.ndarray:
    array = np.asarray(data)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise ValueError(
            f"{name} should be a 1-D integer array of character indices, got dtype "
            f"{array.dtype} and shape {array.shape}"
        )
    return array.astype(np.int64, copy=False)


def _lr_factor(step: int, progress: float, config: TrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then a cosine decay over the whole run."""
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    progress = min(max(progress, 0.0), 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return warm * (config.final_lr_fraction + (1.0 - config.final_lr_fraction) * cosine)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the weight matrices and none on biases."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}]
    if other:
        groups.append({"params": other, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.99))


def train(
    model: nn.Module,
    train_data,
    val_data,
    get_batches: Callable,
    train_step: Callable,
    config: TrainConfig,
    progress: bool = True,
    desc: str = "training",
) -> CharHistory:
    """Train a character model with truncated BPTT; return its ``CharHistory``.

    Args:
        model: ``forward(x, hidden) -> (logits, hidden)`` with ``x`` int64 ``(batch, seq)`` and
            ``logits`` ``(batch, seq, vocab)``; ``init_hidden(batch_size)``. Trained in place on
            the device its parameters are on.
        train_data: int ``(n_train,)`` character indices.
        val_data: int ``(n_val,)`` character indices (used when ``config.eval_every > 0``).
        get_batches: ``get_batches(arr, batch_size, seq_length)`` yielding ``(x, y)`` int arrays
            ``(batch_size, seq_length)`` whose row r continues row r of the batch before.
        train_step: ``train_step(model, optimizer, x, y, hidden, clip_norm) -> (loss, hidden)``,
            one update (the lesson's exercise): ``x``, ``y`` int64 ``(batch, seq)`` tensors on
            the model's device, ``loss`` a float, the returned state detached.
        config: a ``TrainConfig``.
        progress: show a tqdm progress bar.

    Each epoch starts from a zero hidden state at a random offset in ``[0, seq_length)`` of the
    text (so the chunk boundaries differ from epoch to epoch); within an epoch the state is
    carried from batch to batch and detached.
    """
    validate.function("get_batches", get_batches, "(arr, batch_size, seq_length)")
    validate.function(
        "train_step", train_step, "(model, optimizer, x, y, hidden, clip_norm) -> (loss, hidden)"
    )
    train_data = _as_indices(train_data, "train_data")
    val_data = _as_indices(val_data, "val_data")
    per_batch = config.batch_size * config.seq_length
    if len(train_data) - config.seq_length <= per_batch:
        raise ValueError(
            f"batch_size {config.batch_size} x seq_length {config.seq_length} = {per_batch} "
            f"characters per batch is more than the {len(train_data)} training characters "
            "allow; use a smaller batch or a longer text"
        )
    device = model_device(model)
    with cpu_threads(config.threads, device):
        return _train(
            model, train_data, val_data, get_batches, train_step, config, progress, desc, device
        )


def _train(
    model, train_data, val_data, get_batches, train_step, config, progress, desc, device
) -> CharHistory:
    """``train``'s loop, on validated data, with the thread count already set."""
    per_batch = config.batch_size * config.seq_length
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    optimizer = make_optimizer(model, config)
    history = CharHistory()
    history.precision = resolve_precision(config.precision, device)
    autocast = precision_context(history.precision, device)

    by_time = config.budget_seconds is not None and config.max_steps is None
    total = round(config.budget_seconds) if by_time else config.max_steps
    bar = progress_bar(
        total=total,
        desc=desc,
        unit="s" if by_time else "step",
        progress=progress,
        mininterval=0.5,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]",
    )
    smoothed = None
    train_seconds = 0.0
    eval_seconds = 0.0
    shown = -math.inf  # when the bar's postfix was last set (at most every 0.5 s)
    done = False
    model.train()
    loop_started = time.perf_counter()
    while not done:
        offset = int(rng.integers(0, config.seq_length)) if history.epochs else 0
        hidden = _to_device(model.init_hidden(config.batch_size), device)
        steps_before = history.steps
        for x, y in get_batches(train_data[offset:], config.batch_size, config.seq_length):
            started = time.perf_counter()
            progress_now = max(
                history.steps / config.max_steps if config.max_steps else 0.0,
                train_seconds / config.budget_seconds if config.budget_seconds else 0.0,
            )
            lr = config.lr * _lr_factor(history.steps, progress_now, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x_t = torch.as_tensor(x, dtype=torch.long, device=device)
            y_t = torch.as_tensor(y, dtype=torch.long, device=device)
            with autocast:
                loss, hidden = train_step(model, optimizer, x_t, y_t, hidden, config.clip_norm)
            try:
                value = _checked_step(loss, hidden, history.steps + 1)
            except ValueError:
                bar.close()
                raise
            seconds = time.perf_counter() - started
            train_seconds += seconds
            history.record(value, lr, seconds)
            smoothed = value if smoothed is None else 0.95 * smoothed + 0.05 * value
            if not math.isfinite(value):
                bar.close()
                raise FloatingPointError(
                    f"the training loss became {value} at step "
                    f"{history.steps}; try a smaller learning rate"
                )
            done = (config.max_steps is not None and history.steps >= config.max_steps) or (
                config.budget_seconds is not None and train_seconds >= config.budget_seconds
            )
            validated = False
            if config.eval_every and (history.steps % config.eval_every == 0 or done):
                eval_started = time.perf_counter()
                val = evaluate(model, val_data, max_chars=config.eval_chars)
                model.train()
                history.val_steps.append(history.steps)
                history.val_loss.append(val)
                eval_seconds += time.perf_counter() - eval_started
                validated = True
            now = time.perf_counter()
            if not bar.disable and (validated or done or now - shown >= 0.5):
                shown = now
                postfix = {"loss": f"{smoothed:.3f}", "lr": f"{lr:.1e}"}
                if history.val_loss:
                    postfix["val"] = f"{history.val_loss[-1]:.3f}"
                bar.set_postfix(postfix, refresh=False)
            bar.update((round(min(train_seconds, total)) - bar.n) if by_time else 1)
            if done:
                break
        if history.steps == steps_before:
            bar.close()
            raise ValueError("get_batches yielded no batch for the training text")
        history.epochs += 1
    history.loop_seconds = time.perf_counter() - loop_started - eval_seconds
    bar.close()
    history.train_seconds = train_seconds  # the same sum, in the loop's order
    history.chars_per_s = history.steps * per_batch / max(train_seconds, 1e-9)
    history.stopped_by = (
        "max_steps"
        if config.max_steps is not None and history.steps >= config.max_steps
        else "budget_seconds"
    )
    model.eval()
    return history


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data,
    protocol: str = "stream",
    max_chars: int | None = None,
    n_streams: int = 16,
    chunk: int = 256,
    window: int = 64,
    batch_size: int = 256,
) -> float:
    """Mean cross-entropy (nats per character) of ``model`` predicting ``data``'s next characters.

    Args:
        model: as in ``train``; put in eval mode (no dropout) and left in it.
        data: int ``(n,)`` character indices, e.g. the validation text.
        protocol: ``"stream"`` (``n_streams`` contiguous streams read ``chunk`` characters at a
            time, hidden state carried) or ``"win64"`` (independent ``window``-character windows
            from a zero state, ``batch_size`` windows at a time).
        max_chars: use only the first this many characters (``None``: all).

    Returns:
        The loss in nats per character (divide by ln 2, or use ``bits_per_char``, for bits).
    """
    data = _as_indices(data, "data")
    if max_chars is not None:
        data = data[:max_chars]
    device = model_device(model)
    model.eval()
    total, count = 0.0, 0
    if protocol == "stream":
        length = (len(data) - 1) // n_streams
        if length < 1:
            raise ValueError(f"{len(data)} characters are too few for {n_streams} streams")
        starts = np.arange(n_streams) * length
        inputs = torch.as_tensor(np.stack([data[s : s + length] for s in starts]), device=device)
        targets = torch.as_tensor(
            np.stack([data[s + 1 : s + length + 1] for s in starts]), device=device
        )
        hidden = _to_device(model.init_hidden(n_streams), device)
        for t in range(0, length, chunk):
            logits, hidden = model(inputs[:, t : t + chunk], hidden)
            y = targets[:, t : t + chunk]
            total += nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="sum"
            ).item()
            count += y.numel()
    elif protocol == "win64":
        n_windows = (len(data) - 1) // window
        if n_windows < 1:
            raise ValueError(f"{len(data)} characters are too few for one {window}-char window")
        inputs = torch.as_tensor(data[: n_windows * window], device=device).view(n_windows, -1)
        targets = torch.as_tensor(data[1 : n_windows * window + 1], device=device)
        targets = targets.view(n_windows, -1)
        for b in range(0, n_windows, batch_size):
            x = inputs[b : b + batch_size]
            hidden = _to_device(model.init_hidden(x.shape[0]), device)
            logits, _ = model(x, hidden)
            y = targets[b : b + batch_size]
            total += nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="sum"
            ).item()
            count += y.numel()
    else:
        raise ValueError(f"protocol must be 'stream' or 'win64', got {protocol!r}")
    return total / count


def plot_history(history: CharHistory, ax=None, title: str | None = None):
    """Training loss per step (raw and smoothed) and validation loss, in nats and bits per char.

    Returns:
        The matplotlib axis.
    """
    import matplotlib.pyplot as plt

    if not history.train_loss:
        raise ValueError("the history is empty: train first")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.5))
    losses = np.asarray(history.train_loss)
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8)
    span = max(1, min(50, len(losses) // 10))
    if len(losses) > span:
        kernel = np.ones(span) / span
        ax.plot(
            steps[span - 1 :],
            np.convolve(losses, kernel, mode="valid"),
            color="tab:blue",
            label=f"training loss (mean of {span} steps)",
        )
    else:
        ax.lines[-1].set_label("training loss")
    if history.val_loss:
        ax.plot(
            history.val_steps, history.val_loss, "o-", color="tab:orange", label="validation loss"
        )
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("cross-entropy (nats per character)")
    secondary = ax.secondary_yaxis("right", functions=(bits_per_char, lambda b: b * LN2))
    secondary.set_ylabel("bits per character")
    ax.set_title(title or "Character-level LSTM: loss during training")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax


def save_checkpoint(
    path,
    model: nn.Module,
    vocab: Vocab,
    hyperparameters: Mapping,
    extra: Mapping | None = None,
    half: bool = False,
) -> Path:
    """Save a model's weights with its vocabulary and hyper-parameters.

    Args:
        path: the file to write (``.pt``).
        model: the trained model.
        vocab: the ``Vocab`` it was trained with (the mapping between indices and characters).
        hyperparameters: the model's constructor arguments except ``vocab_size``, e.g.
            ``{"hidden_size": 512, "num_layers": 1, "dropout": 0.0}``.
        extra: anything else worth keeping (training configuration, final losses), plain values.
        half: store the weights as float16 (half the file size; loaded back as float32).
    """
    if not isinstance(vocab, Vocab):
        raise ValueError(f"vocab should be a helpers.text.Vocab, got {type(vocab).__name__}")
    state = {
        name: (t.detach().cpu().half() if half and t.is_floating_point() else t.detach().cpu())
        for name, t in model.state_dict().items()
    }
    payload = {
        "format": _FORMAT,
        "model_class": type(model).__name__,
        "model_state": state,
        "vocab": vocab.to_dict(),
        "hyperparameters": dict(hyperparameters),
        "extra": dict(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def read_checkpoint(path) -> dict:
    """The raw contents of a checkpoint written by ``save_checkpoint`` (weights on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for foreign files
        raise ValueError(f"{path} is not a checkpoint this course can read: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a checkpoint written by helpers.char_training")
    return payload


def load_checkpoint(path, model_class: Callable, vocab: Vocab | None = None, device=None):
    """Rebuild a model from a checkpoint.

    Args:
        path: the checkpoint file.
        model_class: the model's class (e.g. the notebook's ``CharRNN``), called as
            ``model_class(vocab_size, **hyperparameters)``.
        vocab: when given, the checkpoint must have been trained with this same vocabulary.
        device: where to put the model (default: the CPU).

    Returns:
        ``(model, vocab, info)``: the model in eval mode, the checkpoint's ``Vocab``, and a dict
        with its ``hyperparameters`` and ``extra``.

    Raises:
        ValueError: the file is missing or foreign, the vocabulary differs from ``vocab``, or the
            model's parameters do not match the checkpoint's (it says which).
    """
    payload = read_checkpoint(path)
    saved_vocab = Vocab.from_dict(payload["vocab"])
    if vocab is not None and saved_vocab != vocab:
        raise ValueError(
            f"the checkpoint {Path(path).name} was trained on another vocabulary "
            f"({saved_vocab.difference(vocab)}); its indices would mean different characters"
        )
    hyperparameters = dict(payload["hyperparameters"])
    try:
        model = model_class(len(saved_vocab), **hyperparameters)
    except NotImplementedError:
        raise
    except Exception as exc:
        raise ValueError(
            f"could not build {getattr(model_class, '__name__', model_class)}"
            f"({len(saved_vocab)}, **{hyperparameters}): {type(exc).__name__}: {exc}"
        ) from exc
    state = payload["model_state"]
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"the model has parameters the checkpoint lacks: {missing}")
        if unexpected:
            details.append(f"the checkpoint has parameters the model lacks: {unexpected}")
        if wrong:
            details.append(f"shapes differ (checkpoint vs model): {wrong}")
        raise ValueError(
            "the checkpoint does not fit this model: "
            + "; ".join(details)
            + ". Name the layers as the exercise says (self.lstm, self.fc)."
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    model.to(device or "cpu")
    model.eval()
    info = {"hyperparameters": hyperparameters, "extra": payload.get("extra", {})}
    return model, saved_vocab, info


def lesson_checkpoint_path(name: str = CHECKPOINT_NAME) -> Path:
    """The checkpoint lesson 04 loads, wherever the notebook runs from: one of that name in the
    current folder (a model you saved yourself), else the one shipped in the course package."""
    own = Path.cwd() / name
    if own.is_file():
        return own
    try:
        return course.resource("data", name)
    except ValueError as exc:
        raise ValueError(f"no {name} in {Path.cwd()}; {exc}") from None


def config_dict(config: TrainConfig) -> dict:
    """``config`` as a plain dict (for checkpoints and JSON reports)."""
    return asdict(config)
