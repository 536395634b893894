"""A trial's figures (matplotlib, Agg): confusion matrix, attention heatmap and its HTML
panel. Functions return figures and log nothing."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def confusion_matrix_figure(cm: np.ndarray, class_names: list[str], title: str) -> Figure:
    size = 1.2 + 0.7 * len(class_names)
    fig = Figure(figsize=(size + 1, size))  # no pyplot state: drawn off the main thread
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = cm.max() / 2 if cm.size else 0
    for (i, j), n in np.ndenumerate(cm):
        ax.text(j, i, str(n), ha="center", va="center", color="white" if n > threshold else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def png_bytes(fig: Figure) -> bytes:
    """A figure as PNG, as `mlflow.log_figure` would save it."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def token_window(weights: list[float], max_tokens: int) -> tuple[int, int]:
    """[start, end) of at most max_tokens tokens centred on the highest weight."""
    n = len(weights)
    if n <= max_tokens:
        return 0, n
    top = int(np.argmax(weights))
    start = min(max(0, top - max_tokens // 2), n - max_tokens)
    return start, start + max_tokens


def row_title(row, kind: str) -> str:
    mark = "ok" if row.true_label == row.predicted_label else "WRONG"
    title = f"true: {row.true_label}   predicted: {row.predicted_label} ({mark})"
    if kind == "attention" and row.padding_mass > 1e-6:
        title += f"   attention on padding: {row.padding_mass:.0%}"
    return title


def heatmap_figure(rows, title: str, kind: str = "attention", max_tokens: int = 40) -> Figure:
    """One row per example: its real tokens as labels, colour = weight.

    Padded steps are never drawn (their mass is written in the row title instead).
    Long texts show a window of `max_tokens` around the highest weight. Planted key
    tokens (synthetic data) are underlined in bold. `kind` labels the colour bar
    ("attention" or "saliency") so saliency is never mistaken for attention.
    """
    shown = [token_window(r.weights, max_tokens) for r in rows]
    width = max((end - start for start, end in shown), default=1)
    fig_w = min(2.5 + 0.42 * width, 24)
    # Fixed margins instead of constrained_layout: same look, several times faster to save.
    row_h, top_h = 1.3, 0.7
    fig_h = row_h * len(rows) + top_h
    # A bare Figure (no pyplot state) and tokens as plain texts instead of tick labels:
    # the same look, about half the rendering time (this runs inside every trial).
    fig = Figure(figsize=(fig_w, fig_h))
    axes = fig.subplots(len(rows), 1, squeeze=False)
    fig.subplots_adjust(
        left=0.3 / fig_w,
        right=1 - 1.3 / fig_w,
        top=1 - top_h / fig_h,
        bottom=0.75 / fig_h,
        hspace=0.75 / 0.55,
    )
    vmax = max((max(r.weights) for r in rows if r.weights), default=1.0) or 1.0
    cmap = matplotlib.colormaps["Reds" if kind == "attention" else "Purples"]
    image = None
    for ax, row, (start, end) in zip(axes[:, 0], rows, shown, strict=True):
        w = np.full(width, np.nan)
        w[: end - start] = row.weights[start:end]
        image = ax.imshow(w[None, :], cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
        ax.set_xticks([])
        below = ax.get_xaxis_transform()  # x in data units, y in axes units
        for i, position in enumerate(range(start, end)):
            key = position in row.key_positions
            ax.text(
                i,
                -0.06,
                row.tokens[position],
                transform=below,
                rotation=60,
                rotation_mode="anchor",
                ha="right",
                va="center",
                fontsize=8,
                fontweight="bold" if key else "normal",
                color="#1f5fbf" if key else "black",
            )
        ax.set_yticks([])
        ax.set_frame_on(False)  # no box over the blank (never-drawn) padded cells
        suffix = (
            f"   tokens {start + 1}-{end} of {len(row.tokens)}"
            if end - start < len(row.tokens)
            else ""
        )
        ax.set_title(row_title(row, kind) + suffix, fontsize=9, loc="left")
    if image is not None:
        bar = fig.add_axes((1 - 1.0 / fig_w, 0.25, 0.15 / fig_w, 0.5))
        fig.colorbar(
            image,
            cax=bar,
            label="attention weight" if kind == "attention" else "occlusion saliency",
        )
    fig.suptitle(title, fontsize=11)
    return fig


def panel_html(rows, title: str, kind: str = "attention") -> str:
    """A self-contained HTML page (inline CSS, no external assets) of highlighted texts."""
    from html import escape

    colour = "220,40,40" if kind == "attention" else "120,60,200"
    vmax = max((max(r.weights) for r in rows if r.weights), default=1.0) or 1.0
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{escape(title)}</title><style>",
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:2}",
        ".row{margin:1em 0;padding:.5em;border-bottom:1px solid #ddd}",
        ".meta{font-size:.85em;color:#555}.t{padding:.15em .2em;border-radius:.2em}",
        ".key{text-decoration:underline;font-weight:bold}.wrong{color:#b00}",
        "</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p class='meta'>colour = {escape(kind)} weight (darkest = {vmax:.3f})</p>",
    ]
    for row in rows:
        cls = "meta" if row.true_label == row.predicted_label else "meta wrong"
        parts.append(f"<div class='row'><div class='{cls}'>{escape(row_title(row, kind))}</div>")
        for i, (tok, w) in enumerate(zip(row.tokens, row.weights, strict=True)):
            key = " key" if i in row.key_positions else ""
            parts.append(
                f"<span class='t{key}' style='background:rgba({colour},{w / vmax:.3f})' "
                f"title='{w:.4f}'>{escape(tok)}</span> "
            )
        parts.append("</div>")
    parts.append("</body></html>")
    return "".join(parts)
