"""Task kinds, declared once.

A target's `type` (data.targets.<name>.type) names a row of KINDS. The row says what the kind's
target is (a label from a class list, a set of labels, a number, a pair, a text), what its head's
outputs become (softmax, sigmoid, a value, unit vectors, tokens), its loss, the metrics it is
judged by and what a prediction answers with. Every module asks the row (`KINDS[proc.type].numeric`,
`task_kind(kind).labels`) instead of comparing a type with a kind's name, so a new kind is one more
row here plus the code its new traits need; tests/unit/test_architecture.py fails on a comparison
with a kind's name anywhere else.

    kind            target                         head's outputs -> prediction         loss
    classification  one label (index in classes)   a logit a class -> softmax, argmax   cross_entropy
    multilabel      labels (multi-hot)             a logit a label -> sigmoid, >= 0.5   binary_cross_entropy
    regression      a number, standardised         one value -> in the column's units   mse
    matching        no column: both sides present  each side's vector -> cosine          contrastive (InfoNCE)
    generation      a text (token ids)             a decoder -> written text             next_token (or ctc)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class TaskKind:
    name: str
    labels: bool = False  # the values are labels from a class list; the head gives a logit a class
    exclusive: bool = False  # with labels: one label a row (softmax, argmax, stratified folds); else sigmoid
    numeric: bool = False  # a number, standardised with the training rows' mean and sd; one output
    paired: bool = False  # no column of its own: a row's two input columns (`between`) are the pair
    writes: bool = False  # a text the model writes token by token
    loss: str = ""  # models/losses.py's name for the loss
    metrics: tuple[str, ...] = ()  # the columns of a results table, after `n`
    metric: str = ""  # the one a task of this kind is judged by (selection, reports, compression records)
    answer: str = ""  # the key a served prediction gives its result under

    @property
    def per_row(self) -> bool:
        """A fixed-width prediction from each row alone (class or label probabilities, or a value):
        what ensembles, the convex, neighbours and tree members, attribution and robustness handle."""
        return self.labels or self.numeric

    @property
    def label_set(self) -> bool:
        """Labels, any number a row: a sigmoid a label, a label predicted at probability >= 0.5."""
        return self.labels and not self.exclusive

    @property
    def width(self) -> int | None:
        """The head's outputs when the kind fixes them (one value, or one vector a side); None: the
        number of classes, or of the vocabulary."""
        return 1 if self.numeric or self.paired else None


KINDS: dict[str, TaskKind] = {k.name: k for k in (
    TaskKind("classification", labels=True, exclusive=True, loss="cross_entropy",
             metrics=("accuracy", "macro_f1", "weighted_f1", "auroc"), metric="macro_f1", answer="label"),
    TaskKind("multilabel", labels=True, loss="binary_cross_entropy",
             metrics=("micro_f1", "macro_f1", "subset_accuracy"), metric="macro_f1", answer="labels"),
    TaskKind("regression", numeric=True, loss="mse", metrics=("mae", "rmse", "r2"), metric="r2", answer="value"),
    TaskKind("matching", paired=True, loss="contrastive",
             metrics=("recall@1", "recall@5", "recall@10", "median_rank", "mrr"), metric="mrr", answer="score"),
    TaskKind("generation", writes=True, loss="next_token",
             metrics=("bleu", "rouge_l", "cer", "wer", "exact_match"), metric="rouge_l", answer="text"),
)}
KIND_NAMES = tuple(KINDS)
# what a multilabel task is, label by label, to a model fitted per label (training/convex.py)
ONE_LABEL = KINDS["classification"]


def task_kind(kind: Union[str, TaskKind]) -> TaskKind:
    """The row of KINDS for a type name (a TaskKind is returned as it is)."""
    if isinstance(kind, TaskKind):
        return kind
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"task type {kind!r}: one of {', '.join(KINDS)}") from None


def kind_of_metrics(metrics: dict) -> TaskKind:
    """The kind whose metrics these are: the first kind whose leading metric is among them
    (regression when none is)."""
    return next((k for k in KINDS.values() if k.metrics[0] in metrics), KINDS["regression"])
