"""Draw helpers/images/unrolled_rnn.png: an RNN folded (one cell with a loop), unrolled in time."""

from diagram import arrow, box, canvas, save


def main() -> None:
    fig, ax = canvas(10.5, 3.6)
    # Folded: one cell whose hidden state feeds back into itself.
    box(ax, 1.2, 1.8, "RNN\ncell", width=1.0, height=0.8)
    box(ax, 1.2, 0.45, "$x_t$", width=0.6, height=0.45, color="input")
    box(ax, 1.2, 3.15, "$y_t$", width=0.6, height=0.45, color="output")
    arrow(ax, (1.2, 0.68), (1.2, 1.4))
    arrow(ax, (1.2, 2.2), (1.2, 2.92))
    arrow(ax, (1.7, 1.95), (1.7, 1.6), rad=-2.2)
    ax.text(2.35, 1.75, "$h_t$", fontsize=11)
    ax.text(2.95, 1.72, "=", fontsize=22)
    # Unrolled: the same cell (same weights) applied at every step.
    xs = [4.4, 6.4, 8.4]
    labels = ["t-1", "t", "t+1"]
    arrow(ax, (3.3, 1.8), (xs[0] - 0.5, 1.8), "$h_{t-2}$")
    for x, t in zip(xs, labels, strict=True):
        box(ax, x, 1.8, "RNN\ncell", width=1.0, height=0.8)
        box(ax, x, 0.45, f"$x_{{{t}}}$", width=0.7, height=0.45, color="input")
        box(ax, x, 3.15, f"$y_{{{t}}}$", width=0.7, height=0.45, color="output")
        arrow(ax, (x, 0.68), (x, 1.4))
        arrow(ax, (x, 2.2), (x, 2.92))
    for left, right, t in zip(xs, xs[1:], labels, strict=False):
        arrow(ax, (left + 0.5, 1.8), (right - 0.5, 1.8), f"$h_{{{t}}}$")
    arrow(ax, (xs[-1] + 0.5, 1.8), (10.3, 1.8), "$h_{t+1}$")
    ax.text(
        6.4,
        0.02,
        "one set of weights (weight_ih, weight_hh, bias_ih, bias_hh) shared by every step",
        ha="center",
        fontsize=9,
        style="italic",
    )
    save(fig, "unrolled_rnn")


if __name__ == "__main__":
    main()
