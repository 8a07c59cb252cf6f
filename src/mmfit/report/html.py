"""`mmfit report RUN`: one self-contained HTML page (plots embedded as PNG data URIs).

Sections: headline metrics; training curves of every loss term and metric; per classification
task the confusion matrix, per-class F1 and a reliability (calibration) diagram with ECE; the
modality ablation; compression and export results when the run has them; a model card (data,
config, model, metrics, intended use, limitations). Everything is read from the run directory;
calibration needs the test rows' probabilities, so the model is run once on the test split.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path
from typing import Optional, Union

import numpy as np

from mmfit.evaluation.metrics import default_metric, not_in_split
from mmfit.run.files import atomic_write
from mmfit.run.layout import CONFIG, EXPORT, PARAMS, REPORT
from mmfit.run.loaded import load_run
from mmfit.run.store import Run
from mmfit.tasks import kind_of_metrics

MAX_CLASSES = 25  # confusion matrices and F1 bars show at most this many classes

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#111827;background:#f8fafc}
header{background:#0f172a;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#cbd5e1;font-size:13px}
main{max-width:1100px;padding:8px 28px 40px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:10px;padding:14px 20px;margin:18px 0}
h2{font-size:17px;margin:4px 0 10px}h3{font-size:14px;margin:14px 0 6px;color:#374151}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border-bottom:1px solid #e5e7eb;padding:4px 10px;
text-align:right}th:first-child,td:first-child{text-align:left}th{background:#f1f5f9}
img{max-width:100%;height:auto}.grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{margin:0}
figcaption{font-size:12px;color:#6b7280}.muted{color:#6b7280;font-size:13px}
pre{background:#f1f5f9;padding:10px;border-radius:6px;font-size:12px;overflow:auto;max-height:420px}
ul{margin:4px 0 8px 18px;padding:0}li{margin:2px 0}
"""


def _png(fig, crop: bool = True) -> str:
    """The figure as a data URL. `crop`: cut to what is drawn (a drawing pass more); a figure laid out
    by tight_layout already fits its frame."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight" if crop else None)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _img(src: str, caption: str) -> str:
    return f'<figure><img src="{src}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def _table(header: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))  # noqa: E731
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


# ---------------------------------------------------------------------- plots
def overfitting(history: list[dict], best_epoch: Optional[int]) -> Optional[tuple[str, str]]:
    """Training loss and validation loss on one axis, the monitored metric beside them with the kept
    epoch marked: where the two losses part, the model has started to memorise its training rows."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not any(h.get("val") for h in history):
        return None
    epochs = [h["epoch"] + 1 for h in history]
    key = next((h["monitor"] for h in history if h.get("monitor")), None)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3))
    a.plot(epochs, [h["train"].get("total", np.nan) for h in history], marker="o", ms=3, color="#2563eb",
           label="training loss")
    a.plot(epochs, [h["val"].get("loss", np.nan) for h in history], marker="o", ms=3, color="#dc2626",
           label="validation loss")
    a.set_xlabel("epoch", fontsize=8)
    a.xaxis.set_major_locator(MaxNLocator(integer=True))
    a.legend(fontsize=8)
    a.set_title("loss: training vs validation", fontsize=9)
    if key:
        values = [h["val"].get(key, np.nan) for h in history]
        b.plot(epochs, values, marker="o", ms=3, color="#16a34a")
        if best_epoch is not None and best_epoch >= 0:
            b.axvline(best_epoch + 1, color="#6b7280", ls="--", lw=1, label=f"kept: epoch {best_epoch + 1}")
            b.legend(fontsize=8)
        b.set_title(f"validation {key} (the monitored metric)", fontsize=9)
        b.set_xlabel("epoch", fontsize=8)
        b.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _png(fig, crop=False), "training vs validation loss, and the monitored metric"


def curves(history: list[dict], best_epoch: Optional[int] = None) -> list[tuple[str, str]]:
    """Training against validation loss first; then every train loss term, and every validation
    metric, against the epoch."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out = [x for x in [overfitting(history, best_epoch)] if x]
    epochs = [h["epoch"] + 1 for h in history]  # counted from 1, as the console and the chart above count them
    for part, title in (("train", "training loss terms"), ("val", "validation metrics")):
        keys = sorted({k for h in history for k in h.get(part, {})})
        if not keys:
            continue
        cols = min(4, len(keys))
        rows = -(-len(keys) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
        for ax, k in zip(axes.flat, keys):
            ys = [h.get(part, {}).get(k, np.nan) for h in history]
            ax.plot(epochs, ys, marker="o", ms=3, color="#2563eb" if part == "train" else "#16a34a")
            ax.set_title(k, fontsize=9)
            ax.tick_params(labelsize=7)
            ax.set_xlabel("epoch", fontsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in list(axes.flat)[len(keys):]:
            ax.axis("off")
        fig.tight_layout()
        out.append((_png(fig, crop=False), title))
    return out


def confusion(m: dict, task: str) -> str:
    import matplotlib.pyplot as plt

    cm = np.asarray(m["confusion_matrix"], float)
    classes = list(m["classes"])
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    note = ""
    if len(classes) > MAX_CLASSES:  # the most frequent classes, rows still normalised over all
        keep = np.sort(np.argsort(-cm.sum(1), kind="stable")[:MAX_CLASSES])
        cm, norm, note = cm[np.ix_(keep, keep)], norm[np.ix_(keep, keep)], f", {MAX_CLASSES} most frequent of {len(classes)}"
        classes = [classes[i] for i in keep]
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * n, 1.0 + 0.5 * n))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{task}: confusion (counts; colour = row share{note})", fontsize=9)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    return _png(fig)


def per_class_f1(m: dict, task: str) -> str:
    import matplotlib.pyplot as plt

    pc = m["per_class"]
    names = list(pc)
    title = f"{task}: F1 per class"
    if len(names) > MAX_CLASSES:
        names = sorted(names, key=lambda c: pc[c]["f1"])[:MAX_CLASSES]
        title += f" ({MAX_CLASSES} lowest of {len(pc)})"
    f1 = [pc[c]["f1"] for c in names]
    fig, ax = plt.subplots(figsize=(6, 0.6 + 0.28 * len(names)))
    ax.barh(names, f1, color="#2563eb")
    ax.invert_yaxis()
    ax.set_xlim(0, 1.22)  # room right of a full bar for its figures
    ax.set_xticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.axvline(m["macro_f1"], color="#dc2626", ls="--", lw=1)
    absent = not_in_split(m)  # no F1, and not averaged
    for i, (v, c) in enumerate(zip(f1, names)):
        shown = "not in this split" if c in absent else f"{v:.2f} (n={pc[c]['support']})"
        ax.text(v + 0.01, i, shown, va="center", fontsize=7)
    ax.tick_params(labelsize=8)
    ax.set_title(f"{title}; dashed: macro-F1 {m['macro_f1']:.3f}", fontsize=9)
    return _png(fig)


def reliability(probs: np.ndarray, y: np.ndarray, task: str, bins: int = 10) -> tuple[str, float]:
    """Reliability diagram of the top-class confidence; -> (png, expected calibration error)."""
    import matplotlib.pyplot as plt

    conf = probs.max(1)
    correct = (probs.argmax(1) == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(conf, edges) - 1, 0, bins - 1)
    acc, mean_conf, count = np.zeros(bins), np.zeros(bins), np.zeros(bins)
    for b in range(bins):
        sel = idx == b
        count[b] = sel.sum()
        if count[b]:
            acc[b], mean_conf[b] = correct[sel].mean(), conf[sel].mean()
    ece = float((count / max(len(y), 1) * np.abs(acc - mean_conf)).sum())
    fig, ax = plt.subplots(figsize=(4.2, 4))
    centers = (edges[:-1] + edges[1:]) / 2
    has = count > 0
    ax.bar(centers[has], acc[has], width=1 / bins * 0.9, color="#2563eb", alpha=0.8, label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="#6b7280", lw=1, label="perfectly calibrated")
    ax.plot(mean_conf[has], acc[has], "o", color="#dc2626", ms=3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{task}: reliability, ECE {ece:.3f}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return _png(fig), ece


def regression_scatter(pred: np.ndarray, y: np.ndarray, task: str) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.scatter(y, pred, s=8, alpha=0.6, color="#2563eb")
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], "--", color="#6b7280", lw=1)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(f"{task}: predicted vs true (test)", fontsize=9)
    return _png(fig)


def ablation_chart(result: dict, task: str, metric: str) -> Optional[str]:
    import matplotlib.pyplot as plt

    ab = result.get("ablation")
    if not ab:
        return None
    full = result["metrics"][task][metric]
    names, vals = ["all modalities"], [full]
    for k, v in ab.items():
        if task in v and metric in v[task]:
            names.append(k.replace("_", " "))
            vals.append(v[task][metric])
    fig, ax = plt.subplots(figsize=(6, 0.6 + 0.3 * len(names)))
    colors = ["#16a34a"] + ["#9333ea" if n.startswith("only") else "#f59e0b" for n in names[1:]]
    ax.barh(names, vals, color=colors)
    ax.invert_yaxis()
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.3f}", va="center", fontsize=7)
    ax.set_title(f"{task} {metric}: each modality removed, or alone (test split)", fontsize=9)
    ax.tick_params(labelsize=8)
    return _png(fig)


# ---------------------------------------------------------------------- the page
def _test_predictions(run: Run):
    """(loaded run, test TensorData, predictions, None) or (loaded run, None, None, why) when the
    run's data cannot be read."""
    loaded = load_run(run)
    try:
        splits = loaded.data()
    except (FileNotFoundError, ValueError) as e:
        return loaded, None, None, str(e)
    test = splits["test"] if len(splits["test"]) else splits["val"]
    return loaded, test, loaded.predict_tensors(test), None


def _limitations(result: dict, n_test: int, primary: str) -> list[str]:
    out = []
    if n_test < 200:
        out.append(f"The test split has only {n_test} rows: metric differences below a few points are within noise.")
    m = result["metrics"].get(primary, {})
    weak = [c for c, v in m.get("per_class", {}).items() if v["f1"] < 0.5]
    if weak:
        out.append(f"Weak classes (F1 < 0.5): {', '.join(weak[:8])}{' ...' if len(weak) > 8 else ''}.")
    ab = result.get("ablation") or {}
    if m and ab:
        key = kind_of_metrics(m).metric
        drops = {k[len("without_"):]: m[key] - v[primary][key] for k, v in ab.items()
                 if k.startswith("without_") and primary in v and key in v[primary]}
        if drops:
            top = max(drops, key=drops.get)
            out.append(f"The prediction leans most on '{top}' (removing it costs {100 * drops[top]:.1f} points of "
                       f"{key}); inputs where '{top}' is missing or unusual will be predicted less well.")
    pres = result.get("modality_presence") or {}
    rare = [f"{k} ({100 * v:.0f}%)" for k, v in pres.items() if v < 0.9]
    if rare:
        out.append(f"Some inputs are often missing in the test data: {', '.join(rare)}.")
    out.append("Trained and evaluated on one data set and one split; performance on data from other sources, "
               "devices or populations has not been measured.")
    return out


def _headline_section(result: dict) -> str:
    metrics = result["metrics"]
    head = "".join(
        f"<h3>{kind.name}</h3>" + _table(["task", "n", *kind.metrics],
                                         [[t, m.get("n", "")] + [m.get(k) for k in kind.metrics]
                                          for t, m in metrics.items() if kind_of_metrics(m) == kind])
        for kind in dict.fromkeys(kind_of_metrics(m) for m in metrics.values()))
    return f"<section><h2>Test metrics</h2>{head or '<p class=muted>no evaluation found</p>'}</section>"


def _task_sections(result: dict, preds: Optional[dict], calib: dict) -> list[str]:
    """Per task: predicted vs true (regression); confusion, per-class F1 and reliability (classification)."""
    parts = []
    for t, m in result["metrics"].items():
        has_preds = preds is not None and preds[t]["mask"].any()
        mask = preds[t]["mask"] if has_preds else None
        kind = kind_of_metrics(m)
        if kind.numeric and has_preds:
            src = regression_scatter(preds[t]["output"][mask], preds[t]["y"][mask], t)
            parts.append(f"<section><h2>{html.escape(t)}</h2>{_img(src, f'{t}: predicted vs true')}</section>")
        if not kind.exclusive:
            continue
        figs = [_img(confusion(m, t), f"{t}: confusion matrix"), _img(per_class_f1(m, t), f"{t}: F1 per class")]
        if has_preds:
            src, ece = reliability(preds[t]["output"][mask], preds[t]["y"][mask].astype(int), t)
            calib[t] = ece
            figs.append(_img(src, f"{t}: reliability diagram (ECE {ece:.3f})"))
        parts.append(f"<section><h2>{html.escape(t)}</h2><div class=grid>{''.join(figs)}</div></section>")
    return parts


def _ensemble_section(run: Run) -> list[str]:
    """An ensemble run (mmfit.fit): the inferred column roles, the members with their curves, and the
    weight and validation score of every candidate head."""
    spec = run.ensemble()
    if not spec:
        return []
    parts = []
    if spec.get("roles"):
        parts.append("<h3>Columns (roles inferred from content)</h3>"
                     + _table(["column", "role", "why"], [[r["column"], r["role"], r["reason"]] for r in spec["roles"]]))
    for task, scores in spec["validation"].items():
        chosen = {(w["member"], w["head"]): w for w in spec["weights"][task]}
        rows = []
        key = default_metric(spec["kinds"][task])
        for cand, score in sorted(scores.items(), key=lambda kv: kv[1]["loss"]):
            member, head = cand.split("/", 1)
            w = chosen.get((member, head))
            rows.append([member, head, score[key], score["loss"], w["weight"] if w else 0.0,
                         w.get("temperature", 1.0) if w else "", w.get("trained_on", "train") if w else ""])
        parts.append(f"<h3>{html.escape(task)}: candidates on validation, and their weights</h3>"
                     "<p class=muted>Ensemble selection (greedy, with replacement) by the validation loss of the "
                     "mixture; a head 'aux:m' predicts from modality m alone; each head's probabilities are "
                     "calibrated (temperature) first.</p>"
                     + _table(["member", "head", f"validation {key}", "validation loss", "weight", "temperature",
                               "final weights trained on"], rows))
    if spec.get("refit"):
        parts.append("<p class=muted>Refit (as AutoGluon's refit_full): "
                     + html.escape(", ".join(f"{k} again on {v['train_rows']} train + val rows for {v['epochs']} "
                                             f"epoch(s), its best count on validation" for k, v in spec["refit"].items()))
                     + "; the weights and temperatures are those chosen for the members before.</p>")
    figs = []
    for name, rel in spec["members"].items():
        member = Run(run / spec.get("refit", {}).get(name, {}).get("from", rel))  # the one validated
        curve = overfitting(member.history(), (member.evaluation("test") or {}).get("best_epoch"))
        if curve:
            figs.append(_img(curve[0], f"member {name}: {curve[1]}"))
    parts.append(f"<h3>Members</h3><div class=grid>{''.join(figs)}</div>")
    return [f"<section><h2>Ensemble</h2><p class=muted>{len(spec['members'])} members trained in "
            f"{spec.get('seconds', 0):.0f}s, each a run in {html.escape(str(run / 'members'))}.</p>{''.join(parts)}"
            "</section>"]


def _derived_sections(run: Run) -> list[str]:
    """Robustness, compression and export results, when the run has them."""
    parts = []
    robust = run.evaluation("robustness")
    if robust:
        parts.append(f"<section><h2>Robustness</h2><pre>{html.escape(json.dumps(robust, indent=2))}</pre></section>")
    comp = run.record()
    if comp.get("steps"):
        rows = [[s.get("method", ""), s.get("params_before", ""), s.get("params", ""), s.get("size_mb_before", ""),
                 s.get("size_mb", ""), s.get("test_score_before", ""), s.get("test_score", ""),
                 s.get("max_abs_diff_logits", "")] for s in comp["steps"]]
        parts.append("<section><h2>Compression</h2><p class=muted>source: "
                     f"{html.escape(str(comp.get('source', '')))}</p>"
                     + _table(["method", "params before", "params", "MB before", "MB", "test score before",
                               "test score", "max logit diff"], rows) + "</section>")
    exp = run.read_json(EXPORT)
    if exp:
        parts.append(f"<section><h2>ONNX export</h2><p>{html.escape(str(exp.get('path', '')))}: "
                     f"{exp.get('size_mb', 0):.1f} MB, opset {exp.get('opset')}; max abs logit difference to "
                     f"PyTorch {exp.get('max_abs_diff', float('nan')):.2e} ({html.escape(str(exp.get('checked_on')))})"
                     "</p></section>")
    return parts


def _model_card(run: Run, loaded, result: dict, n_test: int, calib: dict) -> str:
    cfg, pre = loaded.cfg, loaded.pre
    params = run.read_json(PARAMS) or {}
    cols = "".join(f"<li><b>{html.escape(c)}</b>: {cc.role}{' (required)' if cc.required else ''}"
                   f"{f' (reads the files of {html.escape(cc.source)})' if cc.source else ''}</li>"
                   for c, cc in cfg.data.columns.items())
    targets = "".join(f"<li><b>{html.escape(t)}</b>: {p.type}"
                      f"{f' ({len(p.classes)} classes)' if p.kind.labels else ''}</li>"
                      for t, p in pre.targets.items())
    encs = "".join(f"<li>{html.escape(k)}: {html.escape(str(v.get('strategy', '')))}, {v.get('params', 0):,} "
                   f"parameters ({v.get('trainable', 0):,} trained)</li>"
                   for k, v in params.items() if isinstance(v, dict))
    sizes = f"<p>Test rows: {n_test}.</p>" if n_test else ""
    calib_txt = "".join(f"<li>{html.escape(t)}: expected calibration error {e:.3f}</li>" for t, e in calib.items())
    limits = "".join(f"<li>{html.escape(x)}</li>" for x in _limitations(result, n_test, next(iter(pre.targets))))
    return (f"<section><h2>Model card</h2>"
            f"<h3>Data</h3><p>Manifest: {html.escape(str(cfg.data.manifest))}</p>{sizes}<ul>{cols}</ul>"
            f"<h3>Tasks</h3><ul>{targets}</ul>"
            f"<h3>Model</h3><p>Fusion: {cfg.model.fusion}, width {cfg.model.dim}; "
            f"{params.get('params', 0):,} parameters.</p><ul>{encs}</ul>"
            f"<h3>Metrics</h3><p>See the test metrics above.</p><ul>{calib_txt}</ul>"
            "<h3>Intended use</h3><p>Predicting the configured targets for inputs like the training data "
            "(same columns, sources and label definitions), as decision support with a person reviewing the "
            "output. Not validated for unsupervised or clinical decisions.</p>"
            f"<h3>Limitations</h3><ul>{limits}</ul>"
            f"<h3>Config</h3><details><summary>config.yaml</summary><pre>{html.escape(cfg.to_yaml())}</pre>"
            "</details></section>")


def _attribution_section(loaded, test, n: int = 32) -> list[str]:
    """Integrated gradients over the first `n` test rows: each modality's mean share, the text tokens
    that weigh most, and the mean absolute map of each image and audio input."""
    import matplotlib.pyplot as plt
    import torch

    from mmfit.evaluation.attribution import explain_rows

    try:
        rows = explain_rows(loaded, [test.batch(torch.arange(min(n, len(test))))], steps=16)
    except (ValueError, RuntimeError):  # no class or value to explain, or a model without gradients
        return []
    mods = list(rows[0]["modalities"])
    shares = [[m, float(np.mean([r["modalities"][m]["share"] for r in rows]))] for m in mods]
    words: dict = {}
    for r in rows:
        for m, toks in r["tokens"].items():
            for t, v in toks:
                words.setdefault((m, t), []).append(abs(v))
    top = sorted(((m, t, float(np.mean(v)), len(v)) for (m, t), v in words.items() if len(v) >= 2),
                 key=lambda x: -x[2])[:12]
    figs = []
    for m in {m for r in rows for m in r["maps"]}:
        maps = [np.abs(r["maps"][m]) for r in rows if m in r["maps"]]
        if len({x.shape for x in maps}) != 1:
            continue
        fig, ax = plt.subplots(figsize=(3.4, 3))
        ax.imshow(np.mean(maps, 0), cmap="magma", origin="lower" if m in loaded.cfg.data.columns and
                  loaded.cfg.data.columns[m].role == "audio" else "upper", aspect="auto")
        ax.set_title(f"{m}: mean |attribution|", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        figs.append(_img(_png(fig), m))
    task = rows[0]["task"]
    return [f"<section><h2>Explanations</h2><p class=muted>Integrated gradients of the {html.escape(task)} output "
            f"on {len(rows)} test rows (Predictor.explain; /predict?explain=true per request): each modality's "
            f"mean share, the tokens that weigh most, and where in the images and spectrograms the output came "
            f"from.</p>{_table(['modality', 'mean share'], shares)}"
            + (_table(["input", "token", "mean |score|", "rows"], [list(x) for x in top]) if top else "")
            + f"<div class=grid>{''.join(figs)}</div></section>"]


def _robustness_section(r: dict) -> str:
    from mmfit.evaluation.robustness import robustness_figure

    rows = [[name, *[res.get(str(k), "-") for k in (1, 2, 3)]] for name, res in r["corruptions"].items()]
    table = _table(["corruption", "severity 1", "severity 2", "severity 3"], rows)
    attacks = "".join(_table([f"{m} (epsilon x)", *res], [[r["metric"], *res.values()]]) for m, res in
                      r.get("attacks", {}).items())
    without = _table(["without", r["metric"]], [[m, v] for m, v in r.get("without", {}).items()])
    fig = robustness_figure(r)
    return (f"<section><h2>Robustness</h2><p class=muted>{html.escape(r['task'])} {html.escape(r['metric'])} on "
            f"{r['rows']} rows: clean {r['clean']:.4f} (mmfit robustness RUN, seed {r['seed']}).</p>"
            f"{_img(_png(fig), 'metric under corruption and attack') if fig is not None else ''}{table}{attacks}"
            f"{without}</section>")


def _slices_section(slices: dict) -> str:
    from mmfit.report.tables import slice_columns

    cols = slice_columns(slices)
    header = [slices["column"], "rows"] + [f"{t} {m}" for t, m in cols]
    rows = [[sl["value"], sl["rows"]] + [sl["metrics"].get(t, {}).get(m, "-") for t, m in cols]
            for sl in slices["slices"]]
    return (f"<section><h2>Slices: by {html.escape(slices['column'])}</h2><p class=muted>Metrics per "
            f"{html.escape(slices['how'])} of the column (mmfit evaluate RUN --by {html.escape(slices['column'])})."
            f"</p>{_table(header, rows)}</section>")


def write_report(run: Union[str, Path], output: Optional[Union[str, Path]] = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    run = Run(run)
    if not run.has(CONFIG):
        raise FileNotFoundError(f"{run} is not a run directory (no {CONFIG})")
    history = run.history()
    loaded, test, preds, data_problem = _test_predictions(run)
    result = run.evaluation("test")
    if result is None and test is not None:
        result = loaded.evaluate_tensors(test)
    result = result or {"metrics": {}}
    parts = [_headline_section(result)]
    if history:
        best = result.get("best_epoch")
        imgs = "".join(_img(src, cap) for src, cap in curves(history, best))
        parts.append(f"<section><h2>Training curves</h2><p class=muted>{len(history)} epochs"
                     f"{f'; the weights of epoch {best + 1} are kept' if best is not None and best >= 0 else ''}.</p>"
                     f"{imgs}</section>")
    calib: dict[str, float] = {}
    parts += _task_sections(result, preds, calib)
    if data_problem:
        parts.append(f"<section><h2>Calibration</h2><p class=muted>not drawn: the run's data could not be read "
                     f"({html.escape(data_problem)})</p></section>")
    primary = next(iter(loaded.pre.targets))
    pm = result["metrics"].get(primary)
    ab = ablation_chart(result, primary, kind_of_metrics(pm).metric) if pm else None
    if ab:
        parts.append(f"<section><h2>Modality ablation</h2><p class=muted>Each modality is marked absent (as "
                     f"when it is missing in the data), or is the only one present.</p>{_img(ab, 'ablation')}</section>")
    if result.get("slices"):
        parts.append(_slices_section(result["slices"]))
    robust = run.evaluation("robustness")
    if robust:
        parts.append(_robustness_section(robust))
    if test is not None and len(test):
        parts += _attribution_section(loaded, test)
    parts += _ensemble_section(run) + _derived_sections(run)
    parts.append(_model_card(run, loaded, result, len(test) if test is not None else 0, calib))
    title = f"mmfit report: {run.name}"
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><header><h1>{html.escape(title)}</h1><p>{html.escape(str(run))} · "
            f"written {time.strftime('%Y-%m-%d %H:%M')} · tasks: {', '.join(loaded.pre.targets)}</p></header>"
            f"<main>{''.join(parts)}</main></body></html>")
    if output is None:
        return run.write_text(REPORT, page)
    atomic_write(Path(output), page)
    return Path(output)
