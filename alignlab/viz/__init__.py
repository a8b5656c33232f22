"""Rendering helpers (no torch, no models): token-level colour views as HTML and PNG."""
from .tokens import SIGNALS, TokenRow, color_scale, render_html, render_png

__all__ = ["SIGNALS", "TokenRow", "color_scale", "render_html", "render_png"]
