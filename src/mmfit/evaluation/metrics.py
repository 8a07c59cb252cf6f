"""Metrics per task kind, from collected predictions: scikit-learn's figures (counted here where
scikit-learn's checks would cost more than the sum itself)."""

from __future__ import annotations

import warnings

import numpy as np

from mmfit.tasks import kind_of_metrics, task_kind


def _skm():
    """scikit-learn's metrics, imported when first needed (1.4 s: a process that predicts without
    scoring, such as a Ray actor or `mmfit predict`, never pays it)."""
    from sklearn import metrics

    return metrics


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b of counts, 0 where b is 0 (scikit-learn's zero_division=0)."""
    return np.where(b > 0, a / np.maximum(b, 1), 0.0)


def _f1(tp: np.ndarray, true: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """F1 from counts as scikit-learn computes it: 2 tp / (true + predicted)."""
    return _ratio(2.0 * tp, true + predicted)


def classification_metrics(y: np.ndarray, prob: np.ndarray, classes: list[str], full: bool = False) -> dict:
    """Accuracy, macro- and weighted-F1 (and, full, AUROC, per class, confusion). Macro-F1 averages over
    the classes that occur in `y` or are predicted (scikit-learn's own convention): a class of the
    model that this split neither holds nor is predicted has no F1, and is not counted as a zero.

    The figures are scikit-learn's (zero_division=0), computed here from one confusion matrix: every
    epoch's validation asks for them, and scikit-learn's input checks cost about 8 ms a call."""
    y = np.asarray(y).astype(np.int64)
    prob = np.asarray(prob)
    pred = prob.argmax(1)
    n = len(classes)
    cm = np.bincount(y * n + pred, minlength=n * n).reshape(n, n) if len(y) else np.zeros((n, n), np.int64)
    tp, true, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    f1 = _f1(tp, true, predicted)
    seen = (true + predicted) > 0
    out = {
        "n": int(len(y)),
        "accuracy": float((y == pred).mean()) if len(y) else 0.0,
        "macro_f1": float(np.mean(f1[seen])) if seen.any() else 0.0,
        "weighted_f1": float(np.average(f1, weights=true)) if true.sum() else 0.0,
    }
    if not full:
        return out
    present = sorted(set(y.tolist()))
    if len(present) >= 2:
        # one-vs-rest AUROC over the classes that occur (a class absent from y has no AUROC)
        p = prob[:, present]
        p = p / np.clip(p.sum(1, keepdims=True), 1e-12, None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if len(present) == 2:
                out["auroc"] = float(_skm().roc_auc_score(y == present[1], p[:, 1]))
            else:
                out["auroc"] = float(_skm().roc_auc_score(y, p, multi_class="ovr", labels=present))
    else:
        out["auroc"] = None
    pr, rc = _ratio(tp, predicted), _ratio(tp, true)
    out["per_class"] = {c: {"precision": float(pr[i]), "recall": float(rc[i]), "f1": float(f1[i]),
                            "support": int(true[i])} for i, c in enumerate(classes)}
    out["confusion_matrix"] = cm.tolist()
    out["classes"] = classes
    return out


def not_in_split(m: dict) -> set[str]:
    """The classes of full classification metrics that the split neither holds nor predicts: they have
    no F1 (macro-F1 leaves them out), and tables and charts say so."""
    predicted = np.asarray(m.get("confusion_matrix") or np.zeros((0, 0))).sum(0)
    return {c for k, (c, v) in enumerate(m["per_class"].items())
            if not v["support"] and k < len(predicted) and not predicted[k]}


def multilabel_metrics(y: np.ndarray, prob: np.ndarray, classes: list[str], full: bool = False) -> dict:
    """Micro- and macro-F1, subset accuracy; macro-F1 over the labels that occur in `y` or are predicted
    (a label neither held by the split nor predicted is not counted as a zero). scikit-learn's
    figures (zero_division=0), from the per-label counts."""
    pred = (np.asarray(prob) >= 0.5).astype(np.int64)
    y = np.asarray(y).astype(np.int64).reshape(pred.shape)
    tp, true, predicted = (y & pred).sum(0), y.sum(0), pred.sum(0)
    f1 = _f1(tp, true, predicted)
    seen = (true + predicted) > 0
    out = {
        "n": int(len(y)),
        "micro_f1": float(_f1(tp.sum(), true.sum(), predicted.sum())),
        "macro_f1": float(np.mean(f1[seen])) if seen.any() else 0.0,
        "subset_accuracy": float((y == pred).all(1).mean()) if len(y) else 0.0,
    }
    if full:
        out["per_class"] = {c: {"f1": float(f1[i]), "support": int(true[i])} for i, c in enumerate(classes)}
    return out


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    err = pred - y
    out = {"n": int(len(y)), "mae": float(np.abs(err).mean()) if len(y) else 0.0,
           "rmse": float(np.sqrt((err ** 2).mean())) if len(y) else 0.0}
    out["r2"] = float(_skm().r2_score(y, pred)) if len(y) > 1 else 0.0
    out["neg_rmse"] = -out["rmse"]
    return out


def ranks(sim: np.ndarray) -> np.ndarray:
    """1-based rank of each query's true partner (the diagonal) among all candidates of its row;
    ties count against it (a constant similarity ranks last, not first)."""
    true = np.diag(sim)
    return (sim >= true[:, None]).sum(1)


def retrieval_metrics(emb: np.ndarray, full: bool = False, sides: tuple[str, str] = ("a", "b")) -> dict:
    """emb [N, 2, D] unit vectors of N pairs. Each side queries the other's N items: recall@1/5/10,
    median rank, mean reciprocal rank, averaged over both directions (and, full, each direction)."""
    sim = emb[:, 0] @ emb[:, 1].T
    out = {"n": int(len(emb))}
    per = {}
    for name, s in ((f"{sides[0]}->{sides[1]}", sim), (f"{sides[1]}->{sides[0]}", sim.T)):
        r = ranks(s) if len(s) else np.zeros(0)
        per[name] = {**{f"recall@{k}": float((r <= k).mean()) if len(r) else 0.0 for k in (1, 5, 10)},
                     "median_rank": float(np.median(r)) if len(r) else 0.0,
                     "mrr": float((1.0 / r).mean()) if len(r) else 0.0}
    for k in next(iter(per.values())):
        out[k] = float(np.mean([v[k] for v in per.values()]))
    out["chance_recall@1"] = 1.0 / max(1, len(emb))
    if full:
        out["directions"] = per
    return out


def edit_distance(a, b) -> int:
    """Levenshtein distance between two sequences (characters of a string, or words)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def rouge_l(hyp: str, ref: str) -> float:
    """ROUGE-L F1 of one text (Lin 2004), as Google's rouge-score computes it (its tokenizer:
    lower case, letters and digits)."""
    from rouge_score import rouge_scorer

    return float(rouge_scorer.RougeScorer(["rougeL"]).score(ref, hyp)["rougeL"].fmeasure)


def bleu(hyps: list[str], refs: list[str]) -> float:
    """Corpus BLEU-4 by sacreBLEU with its defaults (13a tokenizer, exponential smoothing, one
    reference per text), on its 0-100 scale: the figure papers quote (`BLEU_SIGNATURE`)."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)]).score)


BLEU_SIGNATURE = "sacrebleu nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp"


def error_rate(refs: list[str], hyps: list[str], unit: str = "char") -> float:
    """Character (CER) or word (WER) error rate by jiwer: the edits to turn every hypothesis into its
    reference, over the reference's characters or words, summed over the corpus. A reference that is
    empty counts its hypothesis's characters or words as insertions (jiwer refuses empty references)."""
    import jiwer

    kept = [(r, h) for r, h in zip(refs, hyps) if r.strip()]
    empty = [h for r, h in zip(refs, hyps) if not r.strip()]
    inserted = sum(len(h) if unit == "char" else len(h.split()) for h in empty)
    edits = length = 0
    if kept:
        rs, hs = [r for r, _ in kept], [h for _, h in kept]
        out = jiwer.process_characters(rs, hs) if unit == "char" else jiwer.process_words(rs, hs)
        edits = out.substitutions + out.deletions + out.insertions
        length = out.substitutions + out.deletions + out.hits
    return (edits + inserted) / max(1, length)


def generation_metrics(refs, hyps, full: bool = False) -> dict:
    """Generated texts against references, by the libraries published figures use: corpus BLEU-4
    (sacreBLEU, 0-100), mean ROUGE-L F1 (rouge-score), character and word error rates (jiwer), and
    exact match."""
    refs, hyps = [str(r) for r in refs], [str(h) for h in hyps]
    out = {"n": len(refs), "bleu": bleu(hyps, refs) if refs else 0.0,
           "rouge_l": float(np.mean([rouge_l(h, r) for h, r in zip(hyps, refs)])) if refs else 0.0,
           "cer": error_rate(refs, hyps, "char"), "wer": error_rate(refs, hyps, "word"),
           "exact_match": float(np.mean([h == r for h, r in zip(hyps, refs)])) if refs else 0.0}
    if full:
        out["bleu_signature"] = BLEU_SIGNATURE
        out["examples"] = [{"reference": r, "generated": h} for r, h in list(zip(refs, hyps))[:10]]
    return out


def task_metrics(kind, y, outputs, classes, full: bool = False) -> dict:
    """The metrics of a task of this kind (a type name or a row of tasks.KINDS)."""
    k = task_kind(kind)
    if k.writes:
        return generation_metrics(y, outputs, full)
    if k.paired:
        return retrieval_metrics(outputs, full)
    if k.labels:
        return (classification_metrics if k.exclusive else multilabel_metrics)(y, outputs, classes, full)
    return regression_metrics(y, outputs)


# ---------------------------------------------------------------------------- which figures lead

# which metric a kind leads with and is judged by: mmfit/tasks.py (TaskKind.metrics, TaskKind.metric)
LOWER_IS_BETTER = ("loss", "rmse", "mae", "median_rank", "cer", "wer")


def default_metric(kind) -> str:
    """The metric a task of this kind is judged by (selection, reports, compression records)."""
    return task_kind(kind).metric


def headline(metrics: dict) -> tuple[str, float]:
    """(name, value) of the metric a task's metrics are judged by."""
    key = kind_of_metrics(metrics).metric
    return key, metrics[key]


def primary_score(metrics: dict | None) -> float | None:
    """The first task's headline value (the task the auxiliary heads learn); None without metrics."""
    if not metrics:
        return None
    return headline(next(iter(metrics.values())))[1]


def higher_is_better(name: str) -> bool:
    """For a metric name, bare ('r2') or per task ('severity/rmse')."""
    return name.rsplit("/", 1)[-1] not in LOWER_IS_BETTER


def monitor_key(cfg) -> tuple[str, str]:
    """The validation figure that selects weights (and stops early): -> (key, 'max' | 'min'), e.g.
    ('diagnosis/macro_f1', 'max'); train.monitor, else the first task's default metric."""
    if cfg.train.monitor:
        key = cfg.train.monitor
    else:
        task, tc = next(iter(cfg.data.targets.items()))
        key = f"{task}/{default_metric(tc.type)}"
    if not cfg.data.targets:  # pretraining: every figure is a loss
        return key, "min"
    return key, "max" if higher_is_better(key) else "min"
