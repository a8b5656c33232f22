"""Tokens coloured by a per-token value, as an HTML page and as a PNG image.

Input is a list of :class:`TokenRow` (one sampled response: its prompt, its response tokens as display strings and
one value per token), so this module knows nothing about models; ``alignlab.inspect`` computes the values.

Colours: a diverging map centred on 0 for signed signals (the log-ratio), a sequential map from 0 for
non-negative ones (KL_t, a_t). One scale is shared by every row of a figure, so colours compare across prompts.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

# name -> (short label, long description, diverging?, colormap)
SIGNALS: dict[str, tuple[str, str, bool, str]] = {
    "logratio": ("log pi - log ref", "log pi(y_t|s_t) - log ref(y_t|s_t): red = the policy made this token more "
                 "likely than the reference, blue = less likely", True, "RdBu_r"),
    "kl": ("KL_t", "KL_t = sum_v ref(v|s_t) (log ref(v|s_t) - log pi(v|s_t)): TDPO's full-vocabulary KL(ref || pi) "
           "at the position that predicts the token", False, "YlOrRd"),
    "alpha": ("a_t", "a_t = r * TVD_t + eps, TVD_t = 1/2 sum_v |p_dpo(v|s_t) - p_rev(v|s_t)|: AlignDistil's "
              "token-adaptive extrapolation coefficient (large where the DPO and reverse-DPO teachers disagree)",
              False, "YlOrRd"),
}


@dataclass
class TokenRow:
    """One sampled response. ``values[i]`` belongs to ``tokens[i]``; ``extra`` holds other signals of the same
    tokens (shown in the HTML tooltips and written to the JSON, not coloured)."""

    prompt: str
    tokens: list[str]
    values: list[float]
    extra: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self):
        if len(self.tokens) != len(self.values):
            raise ValueError(f"{len(self.tokens)} tokens but {len(self.values)} values")
        for name, vals in self.extra.items():
            if len(vals) != len(self.tokens):
                raise ValueError(f"extra[{name!r}] has {len(vals)} values for {len(self.tokens)} tokens")


def _finite(rows: Sequence[TokenRow]) -> list[float]:
    return [v for r in rows for v in r.values if math.isfinite(v)]


def color_scale(rows: Sequence[TokenRow], signal: str, vmin: float | None = None,
                vmax: float | None = None) -> tuple[float, float]:
    """(vmin, vmax) of the shared colour scale: symmetric [-m, m] with m = max |value| for a diverging signal,
    [0, max] otherwise; an explicit bound wins."""
    values = _finite(rows)
    diverging = SIGNALS[signal][2]
    if diverging:
        m = vmax if vmax is not None else max((abs(v) for v in values), default=0.0)
        m = m if m > 0 else 1e-6
        return (vmin if vmin is not None else -m), m
    lo = vmin if vmin is not None else min(0.0, min(values, default=0.0))
    hi = vmax if vmax is not None else max(values, default=0.0)
    return lo, (hi if hi > lo else lo + 1e-6)


def _colormap(signal: str):
    from matplotlib import colormaps

    return colormaps[SIGNALS[signal][3]]


def _rgba(cmap, lo: float, hi: float, value: float) -> tuple[float, float, float, float]:
    if not math.isfinite(value):
        return (0.85, 0.85, 0.85, 1.0)
    x = (min(max(value, lo), hi) - lo) / (hi - lo)
    return tuple(float(c) for c in cmap(x))


def _hex(rgba) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(round(255 * c) for c in rgba[:3]))


def _text_color(rgba) -> str:
    r, g, b = rgba[:3]
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "#ffffff"


def fmt(value: float) -> str:
    """How values are written in tooltips and summaries."""
    return f"{value:.4g}"


# ---- HTML ------------------------------------------------------------------------------------------------------
def render_html(rows: Sequence[TokenRow], signal: str, path: str | Path, title: str = "",
                vmin: float | None = None, vmax: float | None = None, notes: Sequence[str] = ()) -> Path:
    """One block per row: the prompt in grey, then every response token in a <span> whose background is its
    colour and whose title attribute holds its value (and the extra signals). Returns the path."""
    label, description, _, _ = SIGNALS[signal]
    lo, hi = color_scale(rows, signal, vmin, vmax)
    cmap = _colormap(signal)
    stops = ", ".join(_hex(cmap(i / 10)) for i in range(11))
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{html.escape(title or label)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:70em}"
        ".block{margin:1em 0;padding:.5em;border:1px solid #ddd;border-radius:4px}"
        ".text{font-family:monospace;white-space:pre-wrap;line-height:1.9}"
        ".prompt{color:#888}.tok{border-radius:2px;padding:1px 0}"
        ".legend{display:inline-block;width:20em;height:1em;vertical-align:middle;"
        f"background:linear-gradient(to right, {stops})}}.meta{{color:#555;font-size:90%}}</style>",
        "</head><body>",
        f"<h2>{html.escape(title or label)}</h2>",
        f"<p class='meta'>{html.escape(description)}</p>",
        f"<p class='meta'>{html.escape(fmt(lo))} <span class='legend'></span> {html.escape(fmt(hi))} "
        f"&nbsp; (hover a token for its value)</p>",
    ]
    parts += [f"<p class='meta'>{html.escape(n)}</p>" for n in notes]
    for i, row in enumerate(rows):
        spans = []
        for j, (tok, value) in enumerate(zip(row.tokens, row.values)):
            rgba = _rgba(cmap, lo, hi, value)
            tip = [f"{label} = {fmt(value)}"] + [f"{SIGNALS[k][0] if k in SIGNALS else k} = {fmt(v[j])}"
                                                 for k, v in row.extra.items()]
            shown = html.escape(tok).replace("\n", "\u21b5\n")
            spans.append(f"<span class='tok' style='background:{_hex(rgba)};color:{_text_color(rgba)}' "
                         f"title='{html.escape(' | '.join(tip), quote=True)}'>{shown}</span>")
        total = sum(v for v in row.values if math.isfinite(v))
        summary = [f"{len(row.tokens)} tokens", f"sum {label} = {fmt(total)}"]
        summary += [f"sum {SIGNALS[k][0] if k in SIGNALS else k} = {fmt(sum(v))}" for k, v in row.extra.items()]
        parts.append(f"<div class='block'><div class='meta'>#{i + 1} &middot; {html.escape(', '.join(summary))}"
                     f"</div><div class='text'><span class='prompt'>{html.escape(row.prompt)}</span>"
                     f"{''.join(spans)}</div></div>")
    parts.append("</body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


# ---- PNG -------------------------------------------------------------------------------------------------------
def _display(tok: str) -> str:
    return tok.replace("\n", "\u21b5").replace("\t", "\u2192").replace("\r", "")


def _layout(rows: Sequence[TokenRow], width: int, max_prompt_chars: int) -> tuple[list, int]:
    """Place prompts and tokens on a grid of monospace character cells. Returns (items, number of lines); an item
    is (kind, line, column, text, row index, token index)."""
    items, line = [], 0
    for i, row in enumerate(rows):
        prompt = _display(row.prompt)
        if len(prompt) > max_prompt_chars:  # keep the end: the context the response continues from
            prompt = "\u2026" + prompt[len(prompt) - max_prompt_chars + 1:]
        header = f"#{i + 1} {prompt}"
        items.append(("prompt", line, 0, header[:width], i, -1))
        col = min(len(header), width)
        for j, tok in enumerate(row.tokens):
            text = _display(tok) or "\u2205"
            while text:
                if col >= width:
                    line, col = line + 1, 0
                room = width - col
                if len(text) > room and col > 0 and len(text) <= width:
                    line, col = line + 1, 0  # wrap before a token that fits on a fresh line
                    continue
                piece, text = text[:room], text[room:]
                items.append(("token", line, col, piece, i, j))
                col += len(piece)
        line += 2  # one blank line between prompts
    return items, max(line - 1, 1)


def render_png(rows: Sequence[TokenRow], signal: str, path: str | Path, title: str = "",
               vmin: float | None = None, vmax: float | None = None, width_chars: int = 100,
               fig_width: float = 13.0, dpi: int = 120) -> Path:
    """Tokens laid out as monospace text with coloured backgrounds, one block of lines per row, and a colour bar.
    Returns the path."""
    # Figure + the Agg canvas directly, not pyplot: no global backend switch, no figure registry to leak into
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    label, description, _, _ = SIGNALS[signal]
    lo, hi = color_scale(rows, signal, vmin, vmax)
    cmap = _colormap(signal)
    items, n_lines = _layout(rows, width_chars, max_prompt_chars=width_chars - 4)
    char_pt = 0.98 * fig_width * 72 / width_chars          # width of one character cell in points
    fontsize = char_pt / 0.62                        # DejaVu Sans Mono advances ~0.6 em
    line_in = fontsize * 1.7 / 72
    text_h, header_h, bar_h = n_lines * line_in, 0.6, 1.2
    fig = Figure(figsize=(fig_width, text_h + header_h + bar_h))
    FigureCanvasAgg(fig)
    total_h = text_h + header_h + bar_h
    ax = fig.add_axes((0.01, bar_h / total_h, 0.98, text_h / total_h))
    ax.set_xlim(0, width_chars)
    ax.set_ylim(n_lines, 0)
    ax.axis("off")
    for kind, line, col, text, i, j in items:
        if kind == "prompt":
            ax.text(col, line + 0.5, text, va="center", ha="left", family="monospace", fontsize=fontsize,
                    color="#777777", parse_math=False)
            continue
        rgba = _rgba(cmap, lo, hi, rows[i].values[j])
        ax.add_patch(Rectangle((col, line + 0.08), len(text), 0.84, facecolor=rgba, edgecolor="white",
                               linewidth=0.4))
        ax.text(col, line + 0.5, text, va="center", ha="left", family="monospace", fontsize=fontsize,
                color=_text_color(rgba), parse_math=False)
    fig.text(0.01, 1 - 0.3 / total_h, title or label, fontsize=12, va="center", ha="left", parse_math=False)
    cax = fig.add_axes((0.15, 0.65 / total_h, 0.7, 0.2 / total_h))
    bar = fig.colorbar(ScalarMappable(norm=Normalize(lo, hi), cmap=cmap), cax=cax, orientation="horizontal")
    bar.set_label(description if len(description) < 120 else label, fontsize=8)
    bar.ax.tick_params(labelsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    import warnings

    with warnings.catch_warnings():  # glyphs missing from the font are drawn as boxes; no need to warn per token
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        fig.savefig(path, dpi=dpi)
    return path
