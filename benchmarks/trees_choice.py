"""Which gradient-boosted trees for the recipe's table member (issue 36): scikit-learn's
HistGradientBoosting against LightGBM, the same settings where both have them (learning rate 0.05, at
most 300 rounds, 15 leaves, 10 rows a leaf, L2 1.0, early stopping on a tenth of the training rows
after 20 rounds without gain), 5-fold cross-validation repeated over 3 seeds, on scikit-learn's
bundled tables (none of them in the held-out protocol: benchmarks/heldout_data.py).

    pip install lightgbm   # for this comparison only; mmfit does not need it
    python benchmarks/trees_choice.py

Prints per data set: out-of-fold log loss and accuracy (mean ± sd over seeds) and the seconds a fold
takes to fit, for both.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, mean_sd  # noqa: E402


def _hgb(seed):
    from sklearn.ensemble import HistGradientBoostingClassifier

    from mmfit.training.trees import PARAMS

    return HistGradientBoostingClassifier(random_state=seed, **PARAMS)


def _lgbm(seed):
    import lightgbm

    return lightgbm.LGBMClassifier(learning_rate=0.05, n_estimators=300, num_leaves=15, min_child_samples=10,
                                   reg_lambda=1.0, random_state=seed, verbose=-1, n_jobs=2)


def oof(make, X, y, seed):
    from sklearn.model_selection import StratifiedKFold, train_test_split

    p = np.zeros((len(y), len(np.unique(y))))
    spent = []
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(X, y):
        t = time.perf_counter()
        model = make(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if "lightgbm" in type(model).__module__:
                import lightgbm

                a, b, ya, yb = train_test_split(X[tr], y[tr], test_size=0.1, random_state=seed, stratify=y[tr])
                model.fit(a, ya, eval_set=[(b, yb)], callbacks=[lightgbm.early_stopping(20, verbose=False)])
            else:
                model.fit(X[tr], y[tr])
        p[te] = model.predict_proba(X[te])
        spent.append(time.perf_counter() - t)
    loss = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1)).mean())
    return loss, float((p.argmax(1) == y).mean()), float(np.mean(spent))


def main():
    from sklearn import datasets

    sets = {"breast_cancer": datasets.load_breast_cancer(return_X_y=True),
            "wine": datasets.load_wine(return_X_y=True), "iris": datasets.load_iris(return_X_y=True)}
    print(f"{'data set':15} {'library':22} {'out-of-fold log loss':>22} {'accuracy':>18} {'s a fold':>9}")
    for name, (X, y) in sets.items():
        for lib, make in (("HistGradientBoosting", _hgb), ("LightGBM", _lgbm)):
            res = [oof(make, X, y, seed) for seed in (0, 1, 2)]
            loss, acc, sec = (np.array(v) for v in zip(*res))
            print(f"{name:15} {lib:22} {mean_sd(loss):>22} {mean_sd(acc):>18} {sec.mean():9.3f}")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
