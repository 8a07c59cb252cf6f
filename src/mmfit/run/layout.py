"""What each folder the store writes and each of its files is called (run/store.py writes and
reads them).

    OUTPUT/run-<date>-<time>/  a training run (`mmfit train`: new_folder(..., "train"))
    OUTPUT/fit-<date>-<time>/  an ensemble (the small-data recipe: mmfit.fit, `mmfit train MANIFEST --target`)
    OUTPUT/tune-<date>-<time>/ a study (`mmfit tune`: Study)

    RUN/config.yaml          the fully resolved config (absolute paths)
    RUN/run.json             mmfit version, time, paths as given and relative to the run, its source
    RUN/manifest.csv         (a run trained from a DataFrame, kept) the table it was trained on
    RUN/model.safetensors    the kept weights, the whole model (pruned: smaller tensors; quantized: int8 +
                             scales); written once, when training ends
    RUN/labels.json          fitted preprocessing: label maps, statistics, tokenizer references
    RUN/tokenizer-<col>.json trained WordPiece tokenizers
    RUN/encoders/<m>/        architectures (and tokenizers) of Hugging Face encoders
    RUN/params.json          parameters per encoder and fine-tuning strategy
    RUN/metrics.jsonl, tb/   one line per epoch; TensorBoard
    RUN/checkpoints/last.safetensors   model + optimiser + RNG + counters (resume), each epoch
    RUN/checkpoints/best.safetensors   the best weights so far; both without the frozen tensors (frozen
    RUN/checkpoints/frozen.safetensors encoders, a LoRA's base), which go here, once a run
    RUN/eval/<split>.json    metrics and the modality ablation
    RUN/adapters/<m>/        LoRA / IA3 adapters in peft's format
    RUN/skipped.csv, skipped.json      rows left out (data.on_error: skip), cells made absent (missing)
    RUN/compression.json     (derived runs) every step from the source, with what it measured
    RUN/merge.json           (merged runs) parity with the adapted source
    RUN/model.onnx, export.json        (after export) the graph and its parity check
    RUN/ensemble.json, members/<name>/ (an ensemble, mmfit.fit) its members, each a run without its
                             checkpoints/ (never resumed), and their weights
    RUN/members/frozen-<hash>.safetensors  the frozen tensors members hold alike, once for them all
                             (a member's model.safetensors names the file in its metadata: Run.weights)
    RUN/candidates.npz       (an ensemble's member) its heads' logits on val and test, and the targets:
                             what the selection weighed, to inspect or select again without a forward pass
    RUN/report.html          (after mmfit report)

    STUDY/search.yaml, study.db        the search (config and space), the Optuna study (SQLite by default)
    STUDY/trials/trial-<n>/            each trial's run
    STUDY/trials.csv, best.yaml, tune.json, history.png, importance.png   written when the study ends
"""

from mmfit.data.modalities.text import TOKENIZER_FILE

FOLDERS = {"train": "run", "fit": "fit", "tune": "tune"}  # what makes a folder -> its name's prefix

CONFIG = "config.yaml"
INFO = "run.json"
WEIGHTS = "model.safetensors"
LABELS = "labels.json"
TOKENIZERS = TOKENIZER_FILE.format(column="*")
ENCODERS = "encoders"
PARAMS = "params.json"
METRICS = "metrics.jsonl"
TB = "tb"
CHECKPOINTS = "checkpoints"  # what a finished run needs none of (Predictor.save leaves it out)
CHECKPOINT = "checkpoints/last.safetensors"  # written and read through Run: save_checkpoint, load_checkpoint
BEST = "checkpoints/best.safetensors"  # the best weights so far, without the frozen tensors
FROZEN = "checkpoints/frozen.safetensors"  # the tensors training leaves as they are, written once a run
EVAL = "eval"
ADAPTERS = "adapters"
SKIPPED = "skipped.csv"
SKIPPED_SUMMARY = "skipped.json"
COMPRESSION = "compression.json"
MERGE = "merge.json"
ENSEMBLE = "ensemble.json"
CANDIDATES = "candidates.npz"
OOF = "oof.npz"  # a convex member's out-of-fold logits (training/convex.py)
MEMBERS = "members"
ONNX = "model.onnx"
EXPORT = "export.json"
REPORT = "report.html"
MANIFEST = "manifest.csv"  # the table a run trained from a DataFrame keeps
# what a run derived from this one (pruned, quantized, merged) starts from: how its data is read and
# what the model is made of, never what was learned (weights) or measured (evaluations, exports)
PREPROCESSING = (LABELS, TOKENIZERS, ENCODERS)
CARRIED = (CONFIG, *PREPROCESSING, PARAMS, SKIPPED, SKIPPED_SUMMARY)
# config keys that hold paths: stored absolute, so a run can be read from any working directory
PATH_KEYS = ("data.manifest", "data.root", "data.cache_dir", "distill.teacher", "train.output_dir")

# a study (`mmfit tune`)
SEARCH = "search.yaml"
STUDY_DB = "study.db"
TRIALS = "trials"
TRIALS_TABLE = "trials.csv"
BEST_CONFIG = "best.yaml"
SUMMARY = "tune.json"
