"""Figures shared by the experiments: phase colours, energy levels, the energy diagram.

Nothing else in tmsjax imports this module (the numerical core never plots).
"""

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_FAMILY_COLORMAPS = {8: "Purples", 7: "PuRd", 6: "Greens", 5: "Blues", 4: "Oranges"}


def _parse(label: str) -> tuple[int, int, int]:
    digits = "".join(ch for ch in label if ch.isdigit())
    return int(digits), label.count("+"), label.count("-")


def phase_colors(labels) -> dict[str, tuple]:
    """A stable colour per phase label: one hue per k, darker for more σ⁺, paler for more σ⁻;
    "unknown" is grey."""
    colors = {}
    for label in labels:
        if label == "unknown":
            colors[label] = (0.6, 0.6, 0.6, 1.0)
            continue
        k, plus, minus = _parse(label)
        cmap = plt.get_cmap(_FAMILY_COLORMAPS.get(k, "Greys"))
        shade = 0.85 - 0.12 * plus - 0.1 * minus
        colors[label] = cmap(float(np.clip(shade, 0.25, 0.95)))
    return colors


def pretty_label(label: str) -> str:
    """Mathtext form of a label: "4++-" -> $4^{++,-}$."""
    if label == "unknown":
        return label
    k, plus, minus = _parse(label)
    if not plus and not minus:
        return f"${k}$"
    sup = "+" * plus + ("," if plus and minus else "") + "-" * minus
    return f"${k}^{{{sup}}}$"


def draw_energy_levels(
    ax, critical_points, *, max_loss: float | None = None, text: bool = True, **line_kwargs
):
    """Horizontal dashed lines at the catalogue losses, named at the right edge of the axes."""
    style = {"color": "0.55", "lw": 0.8, "ls": "--", "zorder": 0} | line_kwargs
    for point in critical_points:
        if max_loss is not None and point.loss > max_loss:
            continue
        ax.axhline(point.loss, **style)
        if text:
            ax.annotate(
                pretty_label(point.label),
                xy=(1.0, point.loss),
                xycoords=("axes fraction", "data"),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
                color="0.3",
            )


def energy_diagram(critical_points, *, num_features: int):
    """The energy-level diagram of the catalogue: one column per k, a bar per point, labelled with
    its loss and λ where known (as the seed's energy diagram)."""
    colors = phase_colors([p.label for p in critical_points])
    ks = sorted({p.k for p in critical_points}, reverse=True)
    fig, ax = plt.subplots(figsize=(2.2 + 2.0 * len(ks), 6.5))
    for column, k in enumerate(ks):
        family = [p for p in critical_points if p.k == k]
        for point in family:
            offset = 0.18 * (point.sigma_plus - 1) if k == 4 else 0.0
            x = column + offset
            ax.hlines(point.loss, x - 0.16, x + 0.16, color=colors[point.label], lw=4)
            llc = f", λ={point.llc:g}" if point.llc is not None else ""
            ax.annotate(
                f"{pretty_label(point.label)}  {point.loss:.5f}{llc}",
                xy=(x + 0.18, point.loss),
                va="center",
                fontsize=7.5,
            )
    ax.set_xticks(range(len(ks)), [f"{k}-gons" for k in ks])
    ax.set_xlim(-0.5, len(ks) - 0.2)
    ax.set_ylabel("population loss  L = H / 3c")
    ax.set_title(f"TMS critical points, r = 2, c = {num_features}: energy levels (λ where known)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


__all__ = ["phase_colors", "pretty_label", "draw_energy_levels", "energy_diagram"]
