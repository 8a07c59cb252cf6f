"""A validation-only look (issue 36): does a bag of the text encoder's own word pieces (tf-idf on MiniLM's
token ids, which a linear layer in the ONNX graph could read as the model already does), beside MiniLM's
mean-pooled vector, help a linear member on a text column? And do MiniLM's other layers (each mean-pooled,
concatenated: `layers`; with the pieces: `layers+pieces`)? C chosen on validation (0.1-100); validation
macro-F1 over the recipe's seeded 70/15/15 splits of seeds 0-2. No test split is read. `--errors` lists
the validation rows the `both` model gets wrong (text, true and predicted class).

    python benchmarks/heldout_data.py ../shared/data --out /tmp/mmfit-bench/heldout   # glyphs.csv
    python benchmarks/bag_of_pieces.py /tmp/mmfit-bench/heldout/glyphs.csv name category
    python benchmarks/bag_of_pieces.py ../shared/data/emoji/metadata.csv name group
    python benchmarks/bag_of_pieces.py ../shared/data/emoji/metadata.csv name subgroup
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from mmfit.data.manifest import stratified_assign
from mmfit.models.encoders.packaged import minilm_path


def features(texts: list[str]) -> tuple[np.ndarray, sparse.csr_matrix]:
    """MiniLM's mean-pooled vectors of every layer [rows, layers + 1, width] (the last is the vector the
    recipe reads), and each text's counts of its word-piece ids."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path())
    model = AutoModel.from_pretrained(minilm_path()).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    out = []
    with torch.no_grad():
        for s in range(0, len(texts), 128):
            mask = enc["attention_mask"][s:s + 128]
            hs = model(input_ids=enc["input_ids"][s:s + 128], attention_mask=mask,
                       output_hidden_states=True).hidden_states
            m = mask.unsqueeze(-1).float()
            out.append(np.stack([((h * m).sum(1) / m.sum(1)).numpy() for h in hs], 1))
    ids, mask = enc["input_ids"].numpy(), enc["attention_mask"].numpy().astype(bool)
    rows = np.repeat(np.arange(len(ids)), mask.sum(1))
    counts = sparse.csr_matrix((np.ones(mask.sum()), (rows, ids[mask])), shape=(len(ids), tok.vocab_size))
    return np.concatenate(out), counts


def pred_of(x, tr, va, y, c):
    return LogisticRegression(C=c, max_iter=3000).fit(x[tr], y[tr]).predict(x[va])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("manifest")
    ap.add_argument("text")
    ap.add_argument("target")
    ap.add_argument("--errors", action="store_true", help="list the val rows the `both` model gets wrong")
    args = ap.parse_args()
    df = pd.read_csv(args.manifest, dtype=str, keep_default_na=False)
    hidden, counts = features(df[args.text].tolist())
    pooled, every = hidden[:, -1], hidden.reshape(len(hidden), -1)
    y = df[args.target].to_numpy()
    scores: dict[str, list] = {"minilm": [], "pieces": [], "both": [], "layers": [], "layers+pieces": []}
    for seed in (0, 1, 2):
        idx = np.arange(len(df))
        n = int(round(0.15 * len(idx)))
        split = stratified_assign(idx, y.astype(str), n, n, np.random.default_rng(seed))
        s = np.array([split[i] for i in idx])
        tr, va = s == "train", s == "val"
        p = StandardScaler().fit(pooled[tr]).transform(pooled) / np.sqrt(pooled.shape[1])
        b = TfidfTransformer(sublinear_tf=True).fit(counts[tr]).transform(counts)
        e = StandardScaler().fit(every[tr]).transform(every) / np.sqrt(every.shape[1])
        for name, x in {"minilm": p, "pieces": b, "both": sparse.hstack([sparse.csr_matrix(p), b]).tocsr(),
                        "layers": e, "layers+pieces": sparse.hstack([sparse.csr_matrix(e), b]).tocsr()}.items():
            best = max((f1_score(y[va], pred_of(x, tr, va, y, c), average="macro"), c) for c in (0.1, 1, 10, 100))
            scores[name].append(best[0])
            print(f"seed {seed} {name}: val macro-F1 {best[0]:.4f} (C={best[1]:g})", flush=True)
            if name == "both":
                pred = pred_of(x, tr, va, y, best[1])
                wrong = pred != y[va]
                pairs = pd.Series([" <-> ".join(sorted(t)) for t in zip(y[va][wrong], pred[wrong])])
                print(f"seed {seed} both: {int(wrong.sum())} val errors, most confused pairs "
                      f"{pairs.value_counts().head(3).to_dict()}")
                if args.errors:
                    for text, t, q in zip(df[args.text].to_numpy()[va][wrong], y[va][wrong], pred[wrong]):
                        print(f"    {t} -> {q}: {text}")
    for name, v in scores.items():
        print(f"{name}: val macro-F1 {np.mean(v):.4f} ± {np.std(v, ddof=1):.4f} over seeds 0-2")


if __name__ == "__main__":
    main()
