"""Per-step history (compact, host side) and the text / JSON reports."""
from __future__ import annotations

import json
import math
from array import array
from typing import Any, Dict, List, Optional

_NAN = float("nan")


def _opt(x: float) -> Optional[float]:
    return None if x != x else x   # NaN -> None


class History:
    """One record per optimizer step, stored column-wise so that a long run
    costs a few dozen bytes per step instead of one dict per step."""

    FIELDS = ("step", "loss", "grad_norm", "applied_grad_norm", "update_ratio")
    FLAGS = ("nonfinite", "skipped", "scaler_skipped")

    def __init__(self):
        self._cols = {f: array("d") for f in self.FIELDS}
        self._flags = {f: array("b") for f in self.FLAGS}
        self._lr: List[Any] = []

    def append(self, step, loss, grad_norm, applied, ratio, nonfinite, skipped, scaler_skipped,
               lr):
        for f, v in zip(self.FIELDS, (step, loss, grad_norm, applied, ratio)):
            self._cols[f].append(_NAN if v is None else float(v))
        for f, v in zip(self.FLAGS, (nonfinite, skipped, scaler_skipped)):
            self._flags[f].append(1 if v else 0)
        self._lr.append(lr)

    def set_ratio(self, index: int, ratio: float):
        self._cols["update_ratio"][index] = ratio

    def __len__(self):
        return len(self._cols["step"])

    def column(self, name: str) -> List[Optional[float]]:
        if name in self._flags:
            return [bool(v) for v in self._flags[name]]
        if name == "lr":
            return list(self._lr)
        return [_opt(v) for v in self._cols[name]]

    def recent_lrs(self, n: int) -> List[Any]:
        """The learning rates of the last ``n`` steps (cheap: no full column copy)."""
        return self._lr[-n:]

    def records(self) -> List[Dict[str, Any]]:
        out = []
        for i in range(len(self)):
            rec = {"step": int(self._cols["step"][i])}
            for f in self.FIELDS[1:]:
                rec[f] = _opt(self._cols[f][i])
            for f in self.FLAGS:
                rec[f] = bool(self._flags[f][i])
            rec["lr"] = self._lr[i]
            out.append(rec)
        return out


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.4g}"


def summary(guard) -> Dict[str, Any]:
    h = guard._history
    loss = [v for v in h.column("loss") if v is not None and math.isfinite(v)]
    gn = [v for v in h.column("grad_norm") if v is not None and math.isfinite(v)]
    applied = h.column("applied_grad_norm")
    clipped = sum(1 for a, g in zip(applied, h.column("grad_norm"))
                  if a is not None and g is not None and a < g * (1 - 1e-6))
    es = guard._early
    return {
        "world_size": getattr(guard._decisions, "world_size", 1),   # ranks (torch.distributed)
        "steps": len(h),
        "skipped_steps": sum(h.column("skipped")),
        "scaler_skipped_steps": sum(h.column("scaler_skipped")),
        "nonfinite_steps": sum(h.column("nonfinite")),
        "clipped_steps": clipped,
        "loss_first": loss[0] if loss else None,
        "loss_last": loss[-1] if loss else None,
        "loss_min": min(loss) if loss else None,
        "grad_norm_median": sorted(gn)[len(gn) // 2] if gn else None,
        "grad_norm_max": max(gn) if gn else None,
        "early_stopping": {"stopped": es.stopped, "best_metric": es.best, "calls": es.calls,
                           "best_call": es.best_call, "restored": es.restored,
                           "best_step": es.best_step, "stop_step": es.stop_step},
        "events": list(guard._events),
        "notes": list(guard.notes),
    }


_MAX_LAYERS = 12


def layer_table(guard) -> List[Dict[str, Any]]:
    gn, ur = guard.layer_grad_norm, guard.layer_update_ratio
    if gn is None and ur is None:
        return []
    rows = []
    for i, name in enumerate(guard.param_names):
        g = None if gn is None or not math.isfinite(gn[i]) else float(gn[i])
        u = None if ur is None or not math.isfinite(ur[i]) else float(ur[i])
        rows.append({"name": name, "grad_norm": g, "update_ratio": u})
    return rows


def format_report(guard) -> str:
    s = summary(guard)
    lines = ["TrainingGuard report", "===================="]
    if s["world_size"] > 1:
        lines.append(f"ranks: {s['world_size']} (torch.distributed; decisions agreed by all "
                     f"ranks; loss and history of rank {guard._decisions.rank})")
    lines.append(f"steps: {s['steps']}  skipped (non-finite): {s['skipped_steps']}  "
                 f"skipped by GradScaler: {s['scaler_skipped_steps']}  "
                 f"non-finite: {s['nonfinite_steps']}  clipped: {s['clipped_steps']}")
    lines.append(f"loss: first {_fmt(s['loss_first'])}  last {_fmt(s['loss_last'])}  "
                 f"min {_fmt(s['loss_min'])}")
    lines.append(f"gradient norm (before clipping): median {_fmt(s['grad_norm_median'])}  "
                 f"max {_fmt(s['grad_norm_max'])}")
    es = s["early_stopping"]
    if es["calls"]:
        lines.append(f"early stopping: {'stopped' if es['stopped'] else 'not stopped'} after "
                     f"{es['calls']} checks; best metric {_fmt(es['best_metric'])} at check "
                     f"{es['best_call']}{'; best weights restored' if es['restored'] else ''}")
    layers = layer_table(guard)
    if layers:
        lines.append("per parameter (latest window): gradient norm median, update/weight ratio")
        for row in layers[:_MAX_LAYERS]:
            lines.append(f"  {row['name']:<40} {_fmt(row['grad_norm']):>10}  "
                         f"{_fmt(row['update_ratio']):>10}")
        if len(layers) > _MAX_LAYERS:
            lines.append(f"  ... {len(layers) - _MAX_LAYERS} more in to_json()")
    checks = ", ".join(f"{n}={c.mode}" for n, c in guard._checks.items())
    lines.append(f"checks: {checks}")
    for note in s["notes"]:
        lines.append(f"note: {note}")
    if s["events"]:
        lines.append(f"findings ({len(s['events'])}):")
        for e in s["events"]:
            where = f" step {e['step']}" if e["step"] is not None else ""
            lines.append(f"  [{e['action']}] {e['check']}/{e['cause']}{where}"
                         f"{' x%d' % e['count'] if e['count'] > 1 else ''}: {e['message']}")
    elif s["notes"]:
        lines.append("findings: none (but see the notes: not everything could be measured)")
    else:
        lines.append("findings: none -- the run looks healthy")
    return "\n".join(lines)


def to_json(guard, path) -> None:
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x
    doc = {"summary": summary(guard), "history": guard._history.records(),
           "param_names": list(guard.param_names), "layers": layer_table(guard)}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(clean(doc), fh, indent=1, allow_nan=False)
