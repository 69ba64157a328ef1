"""``g.plot(path)``: loss, gradient norm and update ratio over the steps.

matplotlib is an optional extra (``pip install "trainlint[plot]"``); it is
imported only here, only when a plot is asked for, and without pyplot so that
no GUI backend or global state is touched.
"""
from __future__ import annotations


def plot_history(history, path) -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:   # pragma: no cover - depends on the environment
        raise ImportError(
            "g.plot() needs matplotlib, an optional extra: pip install 'trainlint[plot]' "
            "(or pip install matplotlib). g.history and g.to_json() work without it."
        ) from exc
    steps = history.column("step")
    fig = Figure(figsize=(8, 8))
    FigureCanvasAgg(fig)
    panels = (("loss", "loss", False), ("grad_norm", "gradient norm (before clipping)", True),
              ("update_ratio", "update / weight ratio (sampled)", True))
    for k, (col, title, log) in enumerate(panels):
        ax = fig.add_subplot(3, 1, k + 1)
        pts = [(s, v) for s, v in zip(steps, history.column(col))
               if v is not None and v == v and v != float("inf") and (not log or v > 0)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts],
                    marker="." if col == "update_ratio" else None, lw=1)
        if col == "grad_norm":
            applied = [(s, v) for s, v in zip(steps, history.column("applied_grad_norm"))
                       if v is not None and v > 0]
            if applied and pts and any(a[1] < p[1] for a, p in zip(applied, pts)):
                ax.plot([p[0] for p in applied], [p[1] for p in applied], lw=1,
                        label="applied (after clipping)")
                ax.legend(loc="best")
        skipped = [s for s, f in zip(steps, history.column("skipped")) if f]
        for s in skipped[:200]:
            ax.axvline(s, color="red", alpha=0.3, lw=0.8)
        if log and pts:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    fig.axes[-1].set_xlabel("optimizer step")
    fig.tight_layout()
    fig.savefig(path)
