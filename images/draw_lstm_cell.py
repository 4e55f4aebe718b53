"""Draw helpers/images/lstm_cell.png: one LSTM cell with its four gates, named as Udacity's RNN
lesson and PyTorch name them.

Long-term memory (LTM, the cell state c) runs along the top; short-term memory (STM, the hidden
state h) and the event (the input x) enter at the bottom and feed the four gate blocks, whose rows
PyTorch stacks as i, f, g, o in weight_ih / weight_hh.
"""

from diagram import COLORS, arrow, box, canvas, save
from matplotlib.patches import Circle, FancyBboxPatch

LTM_Y = 4.45  # the long-term memory line
BUS_Y = 1.25  # [event, stm], read by every gate
GATE_Y = 2.35  # the gate boxes


def node(ax, x, y, symbol, radius=0.2):
    """A round operation node: x (elementwise product) or + (sum)."""
    ax.add_patch(Circle((x, y), radius, facecolor="white", edgecolor=COLORS["edge"], lw=1.4))
    ax.text(x, y, symbol, ha="center", va="center", fontsize=14)


def line(ax, points, color="edge"):
    xs, ys = zip(*points, strict=True)
    ax.plot(xs, ys, color=COLORS.get(color, color), lw=1.4, solid_capstyle="round")


def region(ax, x0, x1, label, color):
    """A faint band behind the parts of one of Udacity's gates, with its name on top."""
    ax.add_patch(
        FancyBboxPatch(
            (x0, 1.7),
            x1 - x0,
            3.3,
            boxstyle="round,pad=0.02,rounding_size=0.12",
            facecolor=color,
            edgecolor="none",
            alpha=0.35,
            zorder=0,
        )
    )
    ax.text((x0 + x1) / 2, 5.12, label, ha="center", va="center", fontsize=10, weight="bold")


def main() -> None:
    fig, ax = canvas(12.0, 6.2)
    ax.set_ylim(-0.6, 5.6)  # room under the event box for the legend
    # The cell's outline.
    ax.add_patch(
        FancyBboxPatch(
            (1.4, 0.75),
            8.9,
            4.7,
            boxstyle="round,pad=0.02,rounding_size=0.2",
            facecolor="#f8fafc",
            edgecolor=COLORS["edge"],
            lw=1.6,
            zorder=-1,
        )
    )
    region(ax, 2.35, 3.65, "forget gate\nkeep = f ⊙ LTM", "#fecaca")
    region(ax, 4.0, 6.6, "learn gate\nlearned = i ⊙ g", "#bfdbfe")
    region(ax, 6.95, 7.85, "remember\ngate  +", "#fde68a")
    region(ax, 8.1, 9.95, "use gate\nSTM = o ⊙ tanh(LTM)", "#bbf7d0")

    forget_x, learn_x, remember_x, use_x = 3.0, 5.3, 7.4, 9.35
    # Long-term memory along the top: x (forget), + (remember), then on to the next step.
    node(ax, forget_x, LTM_Y, "×")
    node(ax, remember_x, LTM_Y, "+")
    arrow(ax, (0.2, LTM_Y), (forget_x - 0.2, LTM_Y))
    ax.text(0.2, LTM_Y + 0.18, "LTM  $c_{t-1}$", fontsize=11, ha="left", va="bottom")
    arrow(ax, (forget_x + 0.2, LTM_Y), (remember_x - 0.2, LTM_Y))
    ax.text(5.1, LTM_Y + 0.1, "kept LTM", fontsize=9, ha="center", va="bottom", style="italic")
    arrow(ax, (remember_x + 0.2, LTM_Y), (11.8, LTM_Y))
    ax.text(11.8, LTM_Y + 0.18, "new LTM  $c_t$", fontsize=11, ha="right", va="bottom")

    # Short-term memory and the event merge into the bus every gate reads.
    arrow(ax, (0.2, BUS_Y), (1.9, BUS_Y), style="-")
    ax.text(0.2, BUS_Y - 0.18, "STM  $h_{t-1}$", fontsize=11, ha="left", va="top")
    box(ax, 1.9, 0.25, "event  $x_t$", width=1.2, height=0.4, color="input", fontsize=10)
    line(ax, [(1.9, 0.45), (1.9, BUS_Y)])
    line(ax, [(1.9, BUS_Y), (8.7, BUS_Y)])
    ax.plot([1.9], [BUS_Y], "o", color=COLORS["edge"], ms=4)

    gates = [  # x, name, squashing function
        (forget_x, "f", "σ"),
        (4.6, "i", "σ"),
        (6.0, "g", "tanh"),
        (8.7, "o", "σ"),
    ]
    for x, name, squash in gates:
        box(
            ax, x, GATE_Y, f"{squash}\n${name}$", width=0.62, height=0.62, color="gate", fontsize=10
        )
        arrow(ax, (x, BUS_Y), (x, GATE_Y - 0.31))
    # Forget: f multiplies the old LTM.
    arrow(ax, (forget_x, GATE_Y + 0.31), (forget_x, LTM_Y - 0.2))
    # Learn: i x g, then added to the kept LTM.
    node(ax, learn_x, 3.35, "×")
    arrow(ax, (4.6, GATE_Y + 0.31), (learn_x - 0.15, 3.35 - 0.14))
    arrow(ax, (6.0, GATE_Y + 0.31), (learn_x + 0.15, 3.35 - 0.14))
    line(ax, [(learn_x, 3.55), (learn_x, 3.85), (remember_x, 3.85)])
    arrow(ax, (remember_x, 3.85), (remember_x, LTM_Y - 0.2))
    ax.text(6.35, 3.9, "learned", fontsize=9, ha="center", va="bottom", style="italic")
    # Use: tanh of the new LTM, times o, is the new STM.
    box(ax, use_x, 3.6, "tanh", width=0.62, height=0.4, color="state", fontsize=10)
    line(ax, [(use_x, LTM_Y), (use_x, 3.8)])
    ax.plot([use_x], [LTM_Y], "o", color=COLORS["edge"], ms=4)
    node(ax, use_x, GATE_Y, "×")
    arrow(ax, (use_x, 3.4), (use_x, GATE_Y + 0.2))
    arrow(ax, (8.7 + 0.31, GATE_Y), (use_x - 0.2, GATE_Y))
    line(ax, [(use_x, GATE_Y - 0.2), (use_x, 1.65), (10.3, 1.65)])
    arrow(ax, (10.3, 1.65), (11.8, 1.65))
    ax.text(11.8, 1.47, "new STM  $h_t$\n(the output)", fontsize=11, ha="right", va="top")

    ax.text(
        6.0,
        -0.22,
        "σ: sigmoid, 0..1 (how much passes)     tanh: -1..1 (what to write)     "
        "×, ⊙: elementwise product",
        ha="center",
        fontsize=9,
    )
    ax.text(
        6.0,
        -0.5,
        "each gate reads event and STM: gate = squash(event @ w_ih.T + b_ih + stm @ w_hh.T + "
        "b_hh); PyTorch stacks the rows i, f, g, o",
        ha="center",
        fontsize=9,
        style="italic",
    )
    save(fig, "lstm_cell")


if __name__ == "__main__":
    main()
