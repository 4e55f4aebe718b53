"""Draw helpers/images/sequence_batching.png: the numbers 1 to 12 in 2 sequences, batches of 3.

The worked example of lesson 04: the text is cut into ``batch_size = 2`` rows, each one contiguous
stretch (1..6 and 7..12); batches are windows of ``seq_length = 3`` columns, so row r of batch 2
continues row r of batch 1 and the hidden state can be carried. Targets are the inputs shifted
by one: the true next character, so the last target of the last row is 13, one character beyond
the inputs (never a wrapped-around 1 or 7).
"""

from diagram import COLORS, arrow, box, canvas, save

CELL = 0.5  # width of one number's box
BATCH_COLORS = ("#dbeafe", "#fde68a")


def row_of_boxes(ax, x0, y, values, colors, fontsize=11, dashed=()):
    """Boxes side by side from x0 (left edge), centred on y."""
    for i, (value, color) in enumerate(zip(values, colors, strict=True)):
        box(
            ax,
            x0 + (i + 0.5) * CELL,
            y,
            str(value),
            width=CELL * 0.9,
            height=0.42,
            color=color,
            fontsize=fontsize,
        )
        if i in dashed:
            ax.patches[-1].set_linestyle("--")
            ax.patches[-1].set_alpha(0.6)


def main() -> None:
    fig, ax = canvas(12.0, 5.6)
    # 1. The text.
    ax.text(
        0.2,
        5.25,
        "1. the text: 12 inputs, plus one more character (13) that is only ever a target",
        fontsize=11,
        weight="bold",
    )
    row_of_boxes(ax, 0.6, 4.75, range(1, 14), ["#f3f4f6"] * 12 + ["white"], dashed=(12,))

    # 2. Two rows, each a contiguous stretch.
    ax.text(
        0.2,
        4.1,
        "2. reshape into batch_size = 2 rows (one contiguous stretch each), "
        "cut into seq_length = 3 columns",
        fontsize=11,
        weight="bold",
    )
    colors = [BATCH_COLORS[0]] * 3 + [BATCH_COLORS[1]] * 3
    for r, start in enumerate((1, 7)):
        y = 3.55 - r * 0.55
        ax.text(0.25, y, f"row {r}", va="center", fontsize=10)
        row_of_boxes(ax, 0.9, y, range(start, start + 6), colors)
    ax.text(0.9 + 1.5 * CELL, 2.55, "batch 1", ha="center", fontsize=10, style="italic")
    ax.text(0.9 + 4.5 * CELL, 2.55, "batch 2", ha="center", fontsize=10, style="italic")

    # 3. The batches: x and y = x shifted by one.
    ax.text(
        4.6,
        4.1 - 0.55,
        "3. each batch: x (inputs) and y (targets = x shifted by one)",
        fontsize=11,
        weight="bold",
    )
    for b, (x0, color) in enumerate(zip((5.0, 8.6), BATCH_COLORS, strict=True)):
        ax.text(x0 + 1.5 * CELL, 3.0, f"batch {b + 1}", ha="center", fontsize=10, style="italic")
        for r, start in enumerate((1, 7)):
            first = start + 3 * b
            y = 2.6 - r * 0.5
            ax.text(
                x0 - 0.15, y, "x" if r == 0 and b == 0 else "", ha="right", va="center", fontsize=11
            )
            row_of_boxes(ax, x0, y, range(first, first + 3), [color] * 3)
            y2 = 1.35 - r * 0.5
            ax.text(
                x0 - 0.15,
                y2,
                "y" if r == 0 and b == 0 else "",
                ha="right",
                va="center",
                fontsize=11,
            )
            row_of_boxes(ax, x0, y2, range(first + 1, first + 4), [COLORS["output"]] * 3)
        if b == 0:
            for r in range(2):
                y = 2.6 - r * 0.5
                arrow(ax, (x0 + 3 * CELL + 0.1, y), (8.6 - 0.1, y))
            ax.text(
                7.3, 1.75, "the hidden state of row r\nis carried to row r", ha="center", fontsize=9
            )
    ax.text(
        8.6 + 3 * CELL + 0.1,
        0.85,
        "← 13: the true next\n    character, not a\n    wrapped-around 7",
        va="center",
        fontsize=9,
    )
    ax.text(
        0.2,
        0.35,
        "row 0 of batch 2 continues row 0 of batch 1 (4 follows 3), so the "
        "LSTM's state after 3 is the right start for 4",
        fontsize=9.5,
        style="italic",
    )
    save(fig, "sequence_batching")


if __name__ == "__main__":
    main()
