"""``g.plot(path)``: loss, gradient norm and update ratio over the steps.

matplotlib is an optional extra (``pip install "trainlint[plot]"``); it is
imported only here, only when a plot is asked for, and without pyplot so that
no GUI backend or global state is touched.

What a reader needs to see at a glance: labelled axes; norms and ratios on a
log scale (they span decades); the gradient norm before clipping *and* the one
the update used, drawn so that neither hides the other; the clip threshold and
the clipped steps; the steps the guard skipped; every finding where it was
seen; and where early stopping found its best metric and stopped.
"""
from __future__ import annotations

import math

_MAX_FINDING_MARKS = 20   # more would cover the curves; report() lists them all
_ACTION_COLOURS = {"raise": "tab:red", "warn": "tab:orange"}


def _finite(v, positive=False):
    return v is not None and math.isfinite(v) and (not positive or v > 0)


def _points(steps, values, positive=False):
    pts = [(s, v) for s, v in zip(steps, values) if _finite(v, positive)]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_history(history, path, events=(), early=None, max_grad_norm=None):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:   # pragma: no cover - depends on the environment
        raise ImportError(
            "g.plot() needs matplotlib, an optional extra: pip install 'trainlint[plot]' "
            "(or pip install matplotlib). g.history and g.to_json() work without it."
        ) from exc
    steps = history.column("step")
    fig = Figure(figsize=(9, 9))
    FigureCanvasAgg(fig)
    ax_loss, ax_norm, ax_ratio = fig.subplots(3, 1, sharex=True)

    # -- loss: log scale once it spans decades (a blow-up), else linear
    xs, ys = _points(steps, history.column("loss"))
    if xs:
        ax_loss.plot(xs, ys, lw=1, color="tab:blue", label="training loss (per step)")
        if min(ys) > 0 and max(ys) / min(ys) > 100:
            ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss", fontsize=10)

    # -- gradient norm: before clipping (thick, underneath) and applied (thin, dashed,
    # on top): where they coincide both stay visible, where clipping cut the norm
    # the gap shows.
    bx, by = _points(steps, history.column("grad_norm"), positive=True)
    applied = history.column("applied_grad_norm")
    ax, ay = _points(steps, applied, positive=True)
    if bx:
        ax_norm.plot(bx, by, lw=2.2, color="tab:blue", alpha=0.6, zorder=2,
                     label="before clipping")
    clipped = [(s, g) for s, g, a in zip(steps, history.column("grad_norm"), applied)
               if _finite(g, True) and _finite(a) and a < g * (1 - 1e-6)]
    if ax and clipped:
        ax_norm.plot(ax, ay, lw=1.0, ls="--", color="tab:green", zorder=3,
                     label="after clipping (applied)")
        ax_norm.scatter([c[0] for c in clipped], [c[1] for c in clipped], marker="v", s=14,
                        color="tab:purple", zorder=4, label=f"clipped steps ({len(clipped)})")
    if max_grad_norm is not None:
        ax_norm.axhline(max_grad_norm, color="tab:gray", ls=":", lw=1, zorder=1,
                        label=f"max_grad_norm = {max_grad_norm:g}")
    if bx or max_grad_norm is not None:
        ax_norm.set_yscale("log")
    ax_norm.set_ylabel("global gradient norm (log)")
    ax_norm.set_title("gradient norm", fontsize=10)

    # -- update ratio (sampled steps): log scale, with the usual healthy level
    ratios = history.column("update_ratio")
    rx, ry = _points(steps, ratios, positive=True)
    zeros = [s for s, v in zip(steps, ratios) if v == 0]
    if rx or zeros:
        if rx:
            ax_ratio.plot(rx, ry, marker=".", lw=1, color="tab:blue",
                          label="median over weight matrices")
        ax_ratio.axhline(1e-3, color="tab:gray", ls=":", lw=1, label="~1e-3: healthy")
        ax_ratio.set_yscale("log")
        if zeros:   # 0 has no place on a log axis: mark it on the bottom edge
            ax_ratio.scatter(zeros, [0.0] * len(zeros), marker="x", s=16, color="tab:red",
                             transform=ax_ratio.get_xaxis_transform(), clip_on=False,
                             label=f"ratio 0: weights did not move ({len(zeros)})")
    ax_ratio.set_ylabel("|ΔW| / |W| (log)")
    ax_ratio.set_title("update / weight ratio (sampled steps)", fontsize=10)
    ax_ratio.set_xlabel("optimizer step")

    # -- marks shared by every panel
    axes = (ax_loss, ax_norm, ax_ratio)
    skipped = [s for s, f in zip(steps, history.column("skipped")) if f]
    for k, s in enumerate(skipped[:200]):
        for a in axes:
            a.axvline(s, color="tab:red", alpha=0.3, lw=0.8,
                      label=f"skipped step ({len(skipped)})" if k == 0 and a is ax_norm
                      else None)
    marked = [e for e in events if e.get("step") is not None][:_MAX_FINDING_MARKS]
    for k, e in enumerate(marked):
        colour = _ACTION_COLOURS.get(e["action"], "tab:orange")
        for a in axes:
            a.axvline(e["step"], color=colour, ls="--", lw=1, alpha=0.9, zorder=5,
                      label="finding" if k == 0 and a is ax_loss else None)
        ax_loss.annotate(f"{e['check']}/{e['cause']}", xy=(e["step"], 1.0),
                         xycoords=("data", "axes fraction"), rotation=90, va="top",
                         ha="right", fontsize=7, color=colour)
    if early is not None and early.best_step is not None and early.calls:
        for a in axes:
            a.axvline(early.best_step, color="tab:green", ls=":", lw=1.2,
                      label=(f"best metric {early.best:.4g} (check {early.best_call})"
                             if a is ax_loss else None))
    if early is not None and early.stop_step is not None:
        for a in axes:
            a.axvline(early.stop_step, color="tab:green", ls="-", lw=1.5,
                      label=f"early stop (check {early.calls})" if a is ax_loss else None)
    for a in axes:
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(loc="best", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig
