"""Lesson 02 helpers: PyTorch's stacked LSTM / GRU parameters one gate at a time, and gate plots.

PyTorch stores the weights of all four LSTM gates in one matrix: ``weight_ih`` is
``(4 * hidden_size, input_size)`` with the rows of the gates stacked in the order **i, f, g, o**
(input gate, forget gate, candidate, output gate); ``weight_hh`` is ``(4 * hidden_size,
hidden_size)`` and the two biases ``bias_ih`` / ``bias_hh`` are ``(4 * hidden_size,)``, stacked the
same way. A GRU stacks three blocks in the order **r, z, n** (reset gate, update gate, candidate).

This module only cuts those stacks into blocks and reads gate values out of a cell you pass in.
It contains no gate equations: writing them is the lesson's work.

Udacity's RNN lesson -> PyTorch: LTM = cell state ``c``, STM = hidden state ``h``, event = input
``x``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from helpers import validate
from helpers.training import PlainAdam, optimizer_step

#: Row order of the gate blocks in an LSTM's ``weight_ih`` / ``weight_hh`` / biases.
LSTM_GATES = ("i", "f", "g", "o")
#: Row order of the gate blocks in a GRU's ``weight_ih`` / ``weight_hh`` / biases.
GRU_GATES = ("r", "z", "n")
#: What each LSTM block is, in PyTorch's words and in those of Udacity's RNN lesson.
GATE_NAMES = {
    "i": "input gate i (learn gate: how much to learn)",
    "f": "forget gate f (how much LTM to keep)",
    "g": "candidate g (learn gate: what to learn)",
    "o": "output gate o (use gate: how much LTM to show)",
}
#: A pre-activation this large saturates both squashing functions exactly in float32 and float64:
#: ``torch.sigmoid(40.0) == 1.0`` and ``torch.tanh(40.0) == 1.0``.
SATURATED = 40.0

Params = tuple  # (weight_ih, weight_hh, bias_ih, bias_hh)
LSTMCellFn = Callable[..., tuple]


def _check_gates(gates: Sequence[str]) -> tuple[str, ...]:
    gates = tuple(gates)
    if gates not in (LSTM_GATES, GRU_GATES):
        raise ValueError(
            f"gates must be LSTM_GATES {LSTM_GATES} or GRU_GATES {GRU_GATES}, got {gates!r}"
        )
    return gates


def validate_params(params, gates: Sequence[str] = LSTM_GATES) -> int:
    """Validate ``(weight_ih, weight_hh, bias_ih, bias_hh)`` and return ``hidden_size``.

    Args:
        params: ``weight_ih (n * hidden, input)``, ``weight_hh (n * hidden, hidden)``, ``bias_ih``
            and ``bias_hh`` ``(n * hidden,)`` or both ``None``; ``n`` is 4 for an LSTM, 3 for a GRU.
        gates: ``LSTM_GATES`` or ``GRU_GATES``.

    Raises:
        ValueError: when the tuple or a shape is not what an ``nn.LSTMCell`` / ``nn.GRUCell`` has.
    """
    gates = _check_gates(gates)
    n = len(gates)
    kind = "nn.LSTMCell" if n == 4 else "nn.GRUCell"
    if not isinstance(params, tuple | list) or len(params) != 4:
        raise ValueError(
            f"params must be the 4-tuple (weight_ih, weight_hh, bias_ih, bias_hh) of "
            f"an {kind}, got {type(params).__name__}"
            + (f" of length {len(params)}" if isinstance(params, tuple | list) else "")
        )
    weight_ih, weight_hh, bias_ih, bias_hh = params
    for name, value in (("weight_ih", weight_ih), ("weight_hh", weight_hh)):
        if not isinstance(value, torch.Tensor) or value.dim() != 2:
            raise ValueError(
                f"{name} must be a 2-D torch.Tensor, got "
                f"{getattr(value, 'shape', type(value).__name__)}"
            )
    rows = weight_ih.shape[0]
    if rows % n or rows == 0:
        raise ValueError(
            f"weight_ih must have {n} * hidden_size rows (gates {', '.join(gates)}), "
            f"got shape {tuple(weight_ih.shape)}"
        )
    hidden_size = rows // n
    if tuple(weight_hh.shape) != (rows, hidden_size):
        raise ValueError(
            f"weight_hh must be ({rows}, {hidden_size}) = ({n} * hidden_size, "
            f"hidden_size), got {tuple(weight_hh.shape)}"
        )
    if (bias_ih is None) != (bias_hh is None):
        raise ValueError("bias_ih and bias_hh must both be tensors or both be None")
    for name, value in (("bias_ih", bias_ih), ("bias_hh", bias_hh)):
        if value is not None and (
            not isinstance(value, torch.Tensor) or tuple(value.shape) != (rows,)
        ):
            raise ValueError(
                f"{name} must be a tensor of shape ({rows},) = ({n} * hidden_size,), "
                f"got {getattr(value, 'shape', type(value).__name__)}"
            )
    return hidden_size


def gate_rows(hidden_size: int, gate: str, gates: Sequence[str] = LSTM_GATES) -> slice:
    """The rows of ``gate``'s block in the stacked parameters, e.g. ``gate_rows(5, "f")`` is 5:10.

    Args:
        hidden_size: the cell's hidden size ``H`` (at least 1).
        gate: one of ``gates``.
        gates: ``LSTM_GATES`` (``"i", "f", "g", "o"``) or ``GRU_GATES`` (``"r", "z", "n"``).
    """
    gates = _check_gates(gates)
    if gate not in gates:
        raise ValueError(f"gate must be one of {gates}, got {gate!r}")
    validate.integer("hidden_size", hidden_size)
    k = gates.index(gate)
    return slice(k * hidden_size, (k + 1) * hidden_size)


def gate_params(params, gate: str, gates: Sequence[str] = LSTM_GATES) -> tuple:
    """One gate's block of an ``nn.LSTMCell``'s stacked parameters.

    Args:
        params: ``(weight_ih (4H, input), weight_hh (4H, H), bias_ih (4H,), bias_hh (4H,))``.
        gate: ``"i"``, ``"f"``, ``"g"`` or ``"o"`` (PyTorch's row order).
        gates: leave as is for an LSTM; ``GRU_GATES`` for a GRU (or use ``gru_gate_params``).

    Returns:
        ``(w_ih (H, input), w_hh (H, H), b_ih (H,), b_hh (H,))``: views of that gate's rows (the
        biases are ``None`` when the cell has none). Like ``weight_ih``, each weight is stored
        ``(out, in)``.

    Example:
        ``w_ih, w_hh, b_ih, b_hh = gate_params(params, "f")`` gives the forget gate's block.
    """
    hidden_size = validate_params(params, gates)
    rows = gate_rows(hidden_size, gate, gates)
    weight_ih, weight_hh, bias_ih, bias_hh = params
    return (
        weight_ih[rows],
        weight_hh[rows],
        None if bias_ih is None else bias_ih[rows],
        None if bias_hh is None else bias_hh[rows],
    )


def gru_gate_params(params, gate: str) -> tuple:
    """One gate's block of an ``nn.GRUCell``'s stacked parameters (row order r, z, n).

    Args:
        params: ``(weight_ih (3H, input), weight_hh (3H, H), bias_ih (3H,), bias_hh (3H,))``.
        gate: ``"r"`` (reset gate), ``"z"`` (update gate) or ``"n"`` (candidate).

    Returns:
        ``(w_ih (H, input), w_hh (H, H), b_ih (H,), b_hh (H,))`` views of that gate's rows.
    """
    return gate_params(params, gate, GRU_GATES)


def fix_gate(params, gate: str, pre_activation: float, gates: Sequence[str] = LSTM_GATES) -> tuple:
    """A copy of ``params`` in which ``gate`` ignores its inputs: its pre-activation is constant.

    The gate's weight rows become zero, its ``bias_ih`` rows ``pre_activation`` and its
    ``bias_hh`` rows zero. With ``pre_activation=SATURATED`` a sigmoid gate is exactly 1 (fully
    open) and the tanh candidate exactly 1; with ``-SATURATED`` a sigmoid gate is shut (about
    4e-18); with ``0.0`` the candidate is exactly 0. Used to read one gate's value out of a cell.

    Args:
        params: ``(weight_ih, weight_hh, bias_ih, bias_hh)`` with biases (not ``None``).
        gate: a name in ``gates``.
        pre_activation: the constant pre-activation.
        gates: ``LSTM_GATES`` or ``GRU_GATES``.

    Returns:
        A new 4-tuple of tensors (the input tensors are not changed).
    """
    hidden_size = validate_params(params, gates)
    if params[2] is None:
        raise ValueError("fix_gate needs a cell with biases (bias_ih and bias_hh are None)")
    rows = gate_rows(hidden_size, gate, gates)
    weight_ih, weight_hh, bias_ih, bias_hh = (p.detach().clone() for p in params)
    weight_ih[rows] = 0.0
    weight_hh[rows] = 0.0
    bias_ih[rows] = float(pre_activation)
    bias_hh[rows] = 0.0
    return weight_ih, weight_hh, bias_ih, bias_hh


def _cell_step(cell: LSTMCellFn, event, stm, ltm, params):
    result = cell(event, (stm, ltm), params)
    if not isinstance(result, tuple | list) or len(result) != 2:
        raise ValueError(
            f"the cell must return a pair (new_stm, new_ltm), got {type(result).__name__}"
        )
    return result


def read_gates(cell: LSTMCellFn, event: torch.Tensor, stm: torch.Tensor, params) -> dict:
    """The four gate values of an LSTM cell at one step, read out of ``cell`` itself.

    ``cell(event, (stm, ltm), params) -> (new_stm, new_ltm)`` is any LSTM cell (yours, or one
    wrapping ``torch.nn.LSTMCell``). Each gate is read by running the cell with the *other* gates
    fixed (``fix_gate``) and a chosen LTM, using only what the remember and use gates do:

    * ``f``: candidate fixed to 0, LTM of ones: the new LTM is ``f * 1 + i * 0 = f``;
    * ``i``: candidate fixed to 1, LTM of zeros: the new LTM is ``i``;
    * ``g``: input gate fixed open, LTM of zeros: the new LTM is ``g``;
    * ``o``: i, f and g fixed to 1, LTM of 40: the new LTM is 41, ``tanh(41) = 1``, new STM ``= o``.

    The gates do not depend on the LTM (no peepholes), so these are the values at ``(event, stm)``.

    Args:
        cell: the LSTM cell to probe.
        event: ``(batch, input_size)``.
        stm: ``(batch, hidden_size)``.
        params: ``(weight_ih (4H, input), weight_hh (4H, H), bias_ih (4H,), bias_hh (4H,))``.

    Returns:
        ``{"i": ..., "f": ..., "g": ..., "o": ...}``, each ``(batch, hidden_size)``.
    """
    hidden_size = validate_params(params)
    if stm.dim() != 2 or stm.shape[1] != hidden_size:
        raise ValueError(f"stm must be (batch, {hidden_size}), got {tuple(stm.shape)}")
    if event.dim() != 2 or event.shape[0] != stm.shape[0]:
        raise ValueError(
            f"event must be (batch, input_size) with batch {stm.shape[0]}, got {tuple(event.shape)}"
        )
    zeros, ones = torch.zeros_like(stm), torch.ones_like(stm)
    fixed = fix_gate(fix_gate(fix_gate(params, "i", SATURATED), "f", SATURATED), "g", SATURATED)
    return {
        "i": _cell_step(cell, event, stm, zeros, fix_gate(params, "g", SATURATED))[1],
        "f": _cell_step(cell, event, stm, ones, fix_gate(params, "g", 0.0))[1],
        "g": _cell_step(cell, event, stm, zeros, fix_gate(params, "i", SATURATED))[1],
        "o": _cell_step(cell, event, stm, ones * SATURATED, fixed)[0],
    }


def gate_activations(cell: LSTMCellFn, events: torch.Tensor, state, params) -> dict:
    """Run ``cell`` over a sequence and record every gate's value at every step.

    Args:
        cell: ``cell(event, (stm, ltm), params) -> (new_stm, new_ltm)``.
        events: ``(batch, seq, input_size)``.
        state: ``(stm, ltm)``, each ``(batch, hidden_size)``.
        params: ``(weight_ih (4H, input), weight_hh (4H, H), bias_ih (4H,), bias_hh (4H,))``.

    Returns:
        ``{"i", "f", "g", "o", "stm", "ltm"}`` -> ``(batch, seq, hidden_size)`` tensors: the gates
        at each step, and the STM / LTM after each step.
    """
    if not isinstance(events, torch.Tensor) or events.dim() != 3:
        raise ValueError(
            "events must be a (batch, seq, input_size) tensor, got "
            f"{getattr(events, 'shape', type(events).__name__)}"
        )
    if not isinstance(state, tuple | list) or len(state) != 2:
        raise ValueError("state must be the pair (stm, ltm)")
    stm, ltm = state
    record: dict[str, list] = {name: [] for name in (*LSTM_GATES, "stm", "ltm")}
    with torch.no_grad():
        for t in range(events.shape[1]):
            for name, value in read_gates(cell, events[:, t], stm, params).items():
                record[name].append(value)
            stm, ltm = _cell_step(cell, events[:, t], stm, ltm, params)
            record["stm"].append(stm)
            record["ltm"].append(ltm)
    return {name: torch.stack(values, dim=1) for name, values in record.items()}


def latch_task(
    batch_size: int,
    seq_length: int,
    generator: torch.Generator,
    pulse_probability: float = 0.07,
):
    """A memory task for a small LSTM: remember the sign of the latest pulse.

    Each event is 0 most of the time and, with probability ``pulse_probability``, a pulse of +1 or
    -1; the target at each step is the latest pulse so far (0 before the first). Solving it means
    holding one value in memory for many steps and overwriting it at the next pulse.

    Args:
        batch_size, seq_length: positive ints.
        generator: a seeded ``torch.Generator`` (the same seed gives the same sequences).
        pulse_probability: chance of a pulse at each step, in (0, 1).

    Returns:
        ``(events, targets)``, both ``(batch_size, seq_length, 1)`` in the default dtype.
    """
    validate.integers(batch_size=batch_size, seq_length=seq_length)
    validate.fraction("pulse_probability", pulse_probability)
    pulses = torch.rand(batch_size, seq_length, generator=generator) < pulse_probability
    signs = torch.randint(0, 2, (batch_size, seq_length), generator=generator) * 2 - 1
    events = (pulses * signs).to(torch.get_default_dtype()).unsqueeze(-1)
    targets = torch.zeros_like(events)
    latest = torch.zeros(batch_size, 1, dtype=events.dtype)
    for t in range(seq_length):
        latest = torch.where(events[:, t] != 0, events[:, t], latest)
        targets[:, t] = latest
    return events, targets


def train_latch_model(
    hidden_size: int = 6,
    n_steps: int = 500,
    seed: int = 0,
    batch_size: int = 32,
    seq_length: int = 50,
    lr: float = 0.03,
):
    """Train a one-layer ``nn.LSTM`` and a linear read-out on ``latch_task``; return them.

    The loop is ``helpers.training.optimizer_step`` with ``PlainAdam`` (the update of
    ``torch.optim.Adam`` with its default betas), written out because ``torch.optim`` imports
    ``torch._dynamo`` on first use, which takes longer than this whole training on a small CPU.

    Args:
        hidden_size: units of the LSTM.
        n_steps: optimisation steps, each on a fresh batch of ``batch_size`` sequences.
        seed: seeds the initial weights and the batches.

    Returns:
        ``(lstm, readout, losses)``: ``nn.LSTM(1, hidden_size, batch_first=True)``,
        ``nn.Linear(hidden_size, 1)`` and the list of training losses (mean squared error).
    """
    from torch import nn

    validate.integer("n_steps", n_steps)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    lstm = nn.LSTM(1, hidden_size, batch_first=True)
    readout = nn.Linear(hidden_size, 1)
    params = [*lstm.parameters(), *readout.parameters()]
    optimizer = PlainAdam(params, lr=lr)
    losses = []
    for _ in range(n_steps):
        events, targets = latch_task(batch_size, seq_length, generator)
        outputs, _ = lstm(events)
        loss = torch.nn.functional.mse_loss(readout(outputs), targets)
        losses.append(optimizer_step(optimizer, loss))
    return lstm, readout, losses


def plot_gate_heatmaps(
    activations: dict,
    gates: Sequence[str] = ("f", "i", "o"),
    events: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    batch_index: int = 0,
    figsize=(10, 6.5),
):
    """Heat maps of gate values (units down, time across), one panel per gate.

    Args:
        activations: from ``gate_activations``: gate -> ``(batch, seq, hidden_size)``.
        gates: which gates to show, top to bottom (i, f, o range over 0..1, g over -1..1).
        events: optional ``(batch, seq, input_size)`` input, drawn above the heat maps.
        targets: optional ``(batch, seq, k)`` targets, drawn dashed in the same panel.
        batch_index: which sequence of the batch to show.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    if not gates:
        raise ValueError("gates is empty: expected some of 'i', 'f', 'g', 'o'")
    for gate in gates:
        if gate not in activations:
            raise ValueError(f"no {gate!r} in activations; it has {sorted(activations)}")
    top = events is not None or targets is not None
    heights = ([0.6] if top else []) + [1.0] * len(gates)
    fig, axes = plt.subplots(
        len(heights),
        1,
        figsize=figsize,
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    every_axis = list(axes[:, 0])
    gate_axes = every_axis[1:] if top else every_axis
    if top:
        ax = every_axis[0]
        for series, label, style in ((events, "event", "-"), (targets, "target", "--")):
            if series is None:
                continue
            series = series[batch_index].detach().cpu()
            for k in range(series.shape[1]):
                name = f"{label}[{k}]" if series.shape[1] > 1 else label
                ax.step(
                    range(series.shape[0]),
                    series[:, k].numpy(),
                    where="mid",
                    linestyle=style,
                    label=name,
                )
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=8, ncol=2)
    image = None
    for ax, gate in zip(gate_axes, gates, strict=True):
        values = activations[gate][batch_index].detach().cpu().T  # (hidden, seq)
        low = -1.0 if gate == "g" else 0.0
        image = ax.imshow(
            values.numpy(),
            aspect="auto",
            interpolation="nearest",
            cmap="viridis",
            vmin=low,
            vmax=1.0,
        )
        ax.set_ylabel("unit")
        ax.set_title(GATE_NAMES.get(gate, gate), fontsize=10, loc="left")
    every_axis[-1].set_xlabel("time step t")
    fig.colorbar(image, ax=every_axis, shrink=0.8, label="gate value")
    return fig
