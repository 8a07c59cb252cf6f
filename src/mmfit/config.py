"""The whole run as typed config: YAML + dotted overrides, unknown keys are errors.

The dataclasses below are the single description of every key; the loader walks them
to validate a plain dict, so there is no second schema to keep in sync.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from mmfit.errors import ConfigError  # noqa: F401  (part of this module's interface)
from mmfit.tasks import KIND_NAMES, task_kind


class Duration(float):
    """Seconds. Config, overrides, the CLI and the Python API accept the same forms: 600, "600",
    "90s", "10m", "1.5h" (`seconds`)."""


def seconds(limit: Union[None, int, float, str], what: str = "time limit") -> Optional[float]:
    """'10m', '90s', '1.5h', '600' or a number of seconds -> seconds (None stays None)."""
    if limit is None:
        return None
    if isinstance(limit, bool):
        raise ConfigError(f"{what}: expected a duration (600, 90s, 10m, 1.5h), got {limit!r}")
    if isinstance(limit, (int, float)):
        value = float(limit)
    else:
        text = str(limit).strip().lower()
        unit = {"s": 1, "m": 60, "h": 3600}.get(text[-1:], None)
        try:
            value = float(text[:-1] if unit else text) * (unit or 1)
        except ValueError:
            raise ConfigError(f"{what} {limit!r}: give seconds, or a number with s, m or h (e.g. 10m)") from None
    if value <= 0:
        raise ConfigError(f"{what} {limit!r} must be positive")
    return value


# ---------------------------------------------------------------------------- data


@dataclass
class ColumnConfig:
    """One input column. `role`: text, image (path), audio (path), video (path: a video file, an
    animated image, or a volume: a multi-frame DICOM file or a folder of DICOM slices), numeric,
    categorical, datetime (a date or a time stamp: the model reads the time elapsed and where it falls
    in the year, the week and the day)."""

    role: Literal["text", "image", "audio", "video", "numeric", "categorical", "datetime", "vector"]
    # A required column may not be empty; an optional one marks the modality absent.
    required: bool = False
    # the manifest column this one reads instead of its own name: `{role: audio, source: clip}` is the
    # audio track of the video column `clip` (then there is no column of this name in the manifest)
    source: Optional[str] = None


@dataclass
class TargetConfig:
    # matching: no column of its own; the rows' pairs of the two input columns in `between` are the
    # positives, the batch's other rows the negatives (retrieval metrics; Predictor.embed / search)
    # generation: the target is a text column (left out of the inputs) that a decoder writes from the
    # inputs' tokens; BLEU, ROUGE-L, character error rate. `decoder: ctc` instead transcribes one
    # audio column (`source`) frame by frame into characters (CTC, as speech recognisers do)
    type: Literal[KIND_NAMES] = "classification"  # what each kind is: mmfit/tasks.py
    weight: float = 1.0  # w_t in L_total
    separator: str = "|"  # multilabel: how labels are joined in one cell
    classes: Optional[list[str]] = None  # fix the label set (and its order); else learned from train
    between: Optional[list[str]] = None  # matching: the two input columns (or `tabular`) a row pairs
    max_length: int = 48  # generation: tokens of a text at most (longer ones are cut when training)
    vocab_size: int = 2000  # generation: WordPiece vocabulary learned from the training texts
    beam: int = 1  # generation: beam width when predicting (1: greedy)
    decoder_layers: int = 2  # generation: transformer decoder blocks (cross-attention to the inputs' tokens)
    # generation: `transformer` (autoregressive, reads every input) or `ctc` (characters aligned to the
    # frames of the audio column `source`; max_length then counts characters)
    decoder: Literal["transformer", "ctc"] = "transformer"
    source: Optional[str] = None  # ctc: the audio column transcribed (default: the only audio column)


@dataclass
class SplitConfig:
    column: str = "split"  # used when the manifest has it: values train/val/test
    val: float = 0.15
    test: float = 0.15
    seed: int = 0
    stratify: bool = True  # on the first classification target
    group_column: Optional[str] = None  # keep groups (patients, speakers) within one split
    # refit: the val rows join train once the preprocessing is fitted on train (the same as without
    # refit), val is left empty and the test rows stay; for training again on all labelled rows with
    # the epochs chosen on validation before (train.selection: last). The recipe's refit members.
    refit: bool = False


@dataclass
class TextConfig:
    tokenizer: str = "auto"  # auto: the pretrained encoder's own, else WordPiece trained on train text
    max_length: int = 64
    vocab_size: int = 4000
    lowercase: bool = True


@dataclass
class ImageConfig:
    size: Optional[int] = None  # side in pixels; default: the size the image encoders were trained at (scratch: 64)
    fit: Literal["pad", "squash", "crop"] = "pad"  # how a non-square image becomes square
    # how a 16-bit or float image (a scan out of a PACS) becomes 8 bits, never clipped at 255: [low, high]
    # in its stored values, a CT preset in Hounsfield units (WINDOWS: lung, mediastinum, soft_tissue,
    # bone, brain, liver), auto: one window for the whole column, the 0.5th to 99.5th percentile of a
    # sample of its training images (stored with the run; a DICOM file's own window where it has one),
    # or per_image: each image's own 0.5th to 99.5th percentile (absolute levels lost). 8-bit images
    # stay as they are.
    window: Union[str, list[float]] = "auto"


# CT windows (low, high) in Hounsfield units: level -/+ width / 2 (Radiopaedia's usual values)
WINDOWS = {"lung": (-1350.0, 150.0), "mediastinum": (-125.0, 225.0), "soft_tissue": (-160.0, 240.0),
           "bone": (-500.0, 1300.0), "brain": (0.0, 80.0), "liver": (-45.0, 105.0)}


@dataclass
class AudioConfig:
    sample_rate: int = 16000
    seconds: float = 2.0
    n_mels: int = 64
    n_fft: int = 400
    hop_length: int = 160
    features: Literal["auto", "logmel", "waveform"] = "auto"  # auto: waveform for `hf` encoders


@dataclass
class VideoConfig:
    frames: int = 8  # frames taken evenly over each clip (a volume: slices, in anatomical order)
    size: Optional[int] = None  # side of a frame in pixels; default: data.image.size's rule
    # (each frame is fitted like an image: data.image.fit; a DICOM volume through data.image.window)


@dataclass
class DataConfig:
    manifest: Optional[str] = None  # CSV/TSV/JSONL/Parquet/XLSX; None when a DataFrame is passed in Python
    root: Optional[str] = None  # file paths resolve against it; default: the manifest's folder
    columns: dict[str, ColumnConfig] = field(default_factory=dict)
    targets: dict[str, TargetConfig] = field(default_factory=dict)
    split: SplitConfig = field(default_factory=SplitConfig)
    # raise: stop at the first bad values, all named; skip: leave out each row with a bad value;
    # missing: keep a row whose image or audio file cannot be read, with that modality absent (other
    # bad values still skip the row). skipped.csv lists every bad value and what was done.
    on_error: Literal["raise", "skip", "missing"] = "raise"
    na_values: list[str] = field(default_factory=lambda: [""])  # cell values that mean "missing"
    cache_dir: Optional[str] = None  # default: $MMFIT_CACHE, else ~/.cache/mmfit
    shard_rows: int = 1024  # rows per cache shard; decoded and stored one shard at a time
    in_memory: bool = False  # load decoded features into RAM instead of reading the mapped shards per batch
    text: TextConfig = field(default_factory=TextConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    video: VideoConfig = field(default_factory=VideoConfig)


# ---------------------------------------------------------------------------- model


@dataclass
class FinetuneConfig:
    """How much of an encoder trains. `full` everything; `frozen` nothing (a linear probe);
    `partial` the last `layers` blocks; `lora`/`ia3` adapters (through peft); `bitfit` biases."""

    strategy: Literal["full", "frozen", "partial", "lora", "ia3", "bitfit"] = "full"
    layers: int = 2  # partial: how many of the last blocks train (at least the number of blocks: all of them,
    # the embeddings frozen)
    r: int = 8  # lora rank
    alpha: float = 16.0  # lora scaling numerator (scale = alpha / r)
    dropout: float = 0.05  # lora dropout
    target_modules: Optional[list[str]] = None  # lora/ia3: default chosen per model family
    feedforward_modules: Optional[list[str]] = None  # ia3: scale inputs (not outputs) of these
    layer_decay: float = 1.0  # < 1: block i of L gets lr * layer_decay ** (L - i) (pretrained encoders)


@dataclass(kw_only=True)
class EncoderArch:
    """How an encoder is built: the flat arguments its builder receives (models.encoders.EncoderSpec
    adds what the data decides: vocabulary size, table columns, ...). Keyword-only, so the classes
    built on it keep their own fields first (`EncoderConfig("minilm")`, `EncoderSpec("text")`)."""

    path: Optional[str] = None  # hf: a local Hugging Face model directory
    dim: Optional[int] = None  # scratch: width (default model.dim)
    layers: int = 2
    heads: int = 4
    patch: int = 8  # scratch image/audio: pixels per token side (a power of two)
    input_size: Optional[int] = None  # images: the side this encoder resizes them to (default: as the data gives)
    dropout: float = 0.1
    # smaller pretrained encoders (distillation students): keep only the first N transformer layers;
    # factorise the token embedding table to a low rank (every token keeps a vector), or keep only
    # the rows of tokens that occur in the training data (unseen tokens then read as unknown)
    keep_layers: Optional[int] = None
    embed_rank: Optional[int] = None
    trim_vocab: bool = False


@dataclass
class EncoderConfig(EncoderArch):
    # auto: the default for the modality kind (text: minilm, image: efficientnet-lite0, audio and tables:
    # scratch); or name one: scratch | hf | minilm | efficientnet-lite0 | audio-stats (mmfit.registry.ENCODERS)
    name: str = "auto"
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)  # shorthand: `finetune: lora`
    lr: Optional[float] = None  # default: train.pretrained_lr if pretrained (full/partial), else train.lr
    # a run whose weights of this modality's encoder training starts from (`mmfit pretrain`'s, or any
    # run with the same column and encoder); a scratch text encoder also takes that run's vocabulary
    init: Optional[str] = None

    def arch(self) -> EncoderArch:
        return EncoderArch(**{f.name: getattr(self, f.name) for f in dataclasses.fields(EncoderArch)})


@dataclass
class NeighboursConfig:
    """model.head: neighbours. None: chosen on validation (the lowest validation loss), then recorded."""
    k: Optional[int] = None  # how many training rows vote
    temperature: Optional[float] = None  # of the softmax over their similarities
    max_rows: int = 20000  # training rows kept (a random sample beyond: said in the log)


@dataclass
class CrossFitConfig:
    """model.head: convex or trees: heads fitted without epochs, by k-fold cross-fitting (training/convex.py)."""
    folds: int = 5  # cross-validation folds that choose the regularisation and give out-of-fold predictions
    # train: fitted on the training rows; labelled: on train + val (the recipe's member: the val rows
    # are a fold of their own, predicted by a fit on the training rows alone, so the selection still
    # sees rows it was not fitted on)
    rows: str = "train"
    # what chooses the regularisation: the out-of-fold loss over every fold, or (val) over the val fold
    # alone: where the split keeps groups (speakers, patients) apart, only val rows are like new ones
    choose_on: str = "folds"


@dataclass
class ModelConfig:
    dim: int = 128  # width of the fused space
    # keyed by column name or by kind (text, image, audio, tabular); unnamed ones use scratch
    encoders: dict[str, EncoderConfig] = field(default_factory=dict)
    fusion: str = "concat"  # concat | gated | attention
    fusion_layers: int = 1
    fusion_heads: int = 4
    dropout: float = 0.1
    # linear: heads trained on the fused vector (and each modality's, auxiliary); neighbours: k nearest
    # training rows on the frozen encoders' outputs, nothing trained (models/heads.py NeighbourHead);
    # convex: logistic / ridge regression on the frozen encoders' outputs, regularisation chosen by
    # cross-validation (models/heads.py ConvexHead, training/convex.py); trees: gradient-boosted trees on
    # the table's columns, bagged over cross-fitting folds (models/heads.py TreeHead, training/trees.py)
    head: str = "linear"
    neighbours: NeighboursConfig = field(default_factory=NeighboursConfig)
    crossfit: CrossFitConfig = field(default_factory=CrossFitConfig)


@dataclass
class LossConfig:
    task_lambda: float = 1.0  # lambda in L_total = aux_weight * sum_i L_i + lambda * sum_t w_t L_t
    aux_weight: float = 1.0  # 0 disables the per-modality auxiliary heads
    label_smoothing: float = 0.0


@dataclass
class ImageAugment:
    crop: float = 0.0  # random resized crop keeping at least this area fraction (0 = off, e.g. 0.7)
    rotate: float = 0.0  # max rotation in degrees
    hflip: float = 0.0  # chance of a horizontal flip
    vflip: float = 0.0  # chance of a vertical flip
    jitter: float = 0.0  # colour jitter strength: brightness, contrast, saturation by up to +-jitter
    noise: float = 0.0  # gaussian pixel noise sd (pixels in [0, 1])
    blur: float = 0.0  # chance of a gaussian blur (sigma 0.1-1.5 px)


@dataclass
class AudioAugment:
    gain_db: float = 0.0  # random gain in +-gain_db
    snr_db: Optional[float] = None  # add white noise at this signal-to-noise ratio (dB), e.g. 20
    noise_p: float = 0.5  # chance of the noise per clip, when snr_db is set
    shift: float = 0.0  # max circular time shift as a fraction of the clip
    time_masks: int = 0  # SpecAugment: number of time masks (log-mel only)
    time_mask_width: int = 20  # frames, at most
    freq_masks: int = 0  # SpecAugment: number of frequency masks (log-mel only)
    freq_mask_width: int = 8  # mel bins, at most


@dataclass
class TextAugment:
    token_dropout: float = 0.0  # chance a token is replaced by [UNK] (or [MASK] where the tokenizer has it)
    swap: float = 0.0  # chance per token to swap with its right neighbour
    deletion: float = 0.0  # chance a token is deleted (the text closes up)


@dataclass
class TabularAugment:
    jitter: float = 0.0  # gaussian noise sd added to standardised numbers


@dataclass
class VideoAugment:
    frame_drop: float = 0.0  # chance each frame is dropped (its nearest kept frame stands in; one always stays)
    image: bool = False  # augment.image's transforms on clips too, drawn once per clip (every frame alike)


@dataclass
class AugmentConfig:
    """Train-time augmentation on batches; evaluation and prediction never see it."""

    image: ImageAugment = field(default_factory=ImageAugment)
    audio: AudioAugment = field(default_factory=AudioAugment)
    video: VideoAugment = field(default_factory=VideoAugment)
    text: TextAugment = field(default_factory=TextAugment)
    tabular: TabularAugment = field(default_factory=TabularAugment)
    mixup: float = 0.0  # Beta(alpha, alpha) mixing of row pairs (all modalities, soft targets); 0 = off
    mixup_p: float = 1.0  # chance a batch is mixed, when mixup > 0


@dataclass
class AdversarialConfig:
    """Adversarial training (models/adversarial.py): each batch is also seen perturbed towards a
    higher loss, L = (1 - weight) L_clean + weight L_adv. Image and log-mel inputs are perturbed in
    input space (L-inf ball; pixels in [0, 1], log-mel in natural-log units), text in embedding space
    (each token in an L2 ball whose radius is epsilon times the batch's mean token-embedding norm)."""

    method: Literal["none", "fgsm", "pgd", "freelb"] = "none"
    modalities: Optional[list[str]] = None  # input columns to perturb; default: every image, audio and text one
    epsilon: dict[str, float] = field(default_factory=lambda: {"image": 0.03, "audio": 0.5, "text": 0.05})
    steps: int = 3  # pgd / freelb ascent steps (fgsm: 1)
    step_size: Optional[float] = None  # per step, a fraction of epsilon; default pgd 2.5 / steps, freelb 1 / steps
    weight: float = 0.5  # of the adversarial loss against the clean one


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3  # new layers
    pretrained_lr: float = 1e-5  # pretrained encoders
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    accumulate: int = 1
    precision: Literal["fp32", "bf16"] = "fp32"
    monitor: Optional[str] = None  # e.g. diagnosis/macro_f1 (validation); default: first task's
    # which weights the run keeps: `val` those of the epoch with the best monitored validation value
    # (with early stopping; needs validation rows); `last` the last epoch's, with no validation at all
    selection: Literal["val", "last"] = "val"
    patience: int = 5
    min_delta: float = 0.0
    seed: int = 0
    modality_dropout: float = 0.1  # chance to mask each present modality of a training row
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    device: str = "auto"
    # seconds: no epoch is started that would end after it, and the learning rate decays over the epochs
    # that fit (from the third epoch on, timed; never more than `epochs`)
    time_limit: Optional[Duration] = None
    output_dir: str = "runs"
    run_name: Optional[str] = None
    num_threads: Optional[int] = None
    strategy: Literal["ddp", "fsdp"] = "ddp"  # with several processes: replicate (DDP) or shard (FSDP2) the model
    # with several processes: how long a rank waits for the others (at the end of its decoding share, a
    # checkpoint, a collective) before the run fails with a timeout instead of hanging
    dist_timeout: Duration = 1800.0
    loader_workers: Optional[int] = None  # processes that assemble batches; default 0 on CPU, up to 4 on a GPU
    pin_memory: Optional[bool] = None  # page-locked batches for a faster copy; default: on a GPU
    keep_sparsity: bool = False  # weights that start at exactly zero stay zero (recovery after pruning)


@dataclass
class DistillConfig:
    """Knowledge distillation from a trained teacher run (`mmfit distill TEACHER student.yaml`):
    L = (1 - alpha) * L_hard + alpha * T^2 * KL(teacher_T || student_T) + feature_weight * L_feat,
    L_feat matching the batch's pairwise similarities of fused representations (any widths)."""

    teacher: Optional[str] = None  # teacher run directory
    temperature: float = 2.0
    alpha: float = 0.7
    feature_weight: float = 0.0


@dataclass
class SearchParam:
    """One dimension of a search space: `float` / `int` in [low, high] (optionally `log`, or a grid
    `step`), or `categorical` over `choices`."""

    type: Literal["float", "int", "categorical"] = "float"
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: list[Any] = field(default_factory=list)


@dataclass
class TuneConfig:
    """`mmfit tune`: which dotted config keys to search, how, and when to stop bad trials early."""

    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    trials: int = 20
    seed: int = 0
    startup_trials: int = 3  # trials completed before the median pruner judges others
    warmup_epochs: int = 1  # epochs a trial always runs before it may be pruned
    space: dict[str, SearchParam] = field(default_factory=dict)  # dotted key -> SearchParam
    enqueue: list[dict[str, Any]] = field(default_factory=list)  # known configs to try first


@dataclass
class RecipeConfig:
    """With `enabled`, `mmfit train` runs the small-data recipe on the data section (members on
    frozen features, fine-tuned and from scratch, combined by ensemble selection on validation;
    src/mmfit/recipe/) instead of the one model the model section describes. `mmfit init` and
    `mmfit train MANIFEST --target COL` turn it on."""

    enabled: bool = False
    time_limit: Optional[Duration] = None  # seconds for the whole recipe; each member stops within its share
    # after selection, the chosen members are trained again on train + val (their best epoch count,
    # their ensemble weight and temperature kept) where the time limit allows: AutoGluon's refit_full
    refit: bool = True
    # within time_limit: where the frozen pretrained image/video encoders' one pass over every row would
    # take more than a third of it, images (then a video's frame count) are made smaller until it fits
    fit_inputs: bool = True
    # member kinds not to train (AutoGluon's excluded_model_types): convex, trees, neighbours, finetune, scratch
    exclude: list[str] = field(default_factory=list)


RECIPE_MEMBERS = ("probe", "convex", "trees", "neighbours", "finetune", "scratch")


@dataclass
class PretrainConfig:
    """`mmfit pretrain`: self-supervised objectives on the rows' inputs (targets, if any, hidden), each
    weighted here (0 turns it off) and logged as its own loss term (models/pretrain.py)."""

    mlm: float = 1.0  # masked language modelling, text encoders
    masked_patches: float = 1.0  # masked patch modelling (reconstruct hidden patches), image and log-mel encoders
    contrastive: float = 1.0  # symmetric InfoNCE between every pair of modalities present in a row
    text_mask: float = 0.15  # share of a text's tokens masked (BERT: 80 % [MASK], 10 % random, 10 % kept)
    patch_mask: float = 0.5  # share of an image's / spectrogram's patches hidden
    proj_dim: int = 128  # the shared space of the contrastive projections
    temperature: float = 0.07  # the contrastive temperature's start (it is learned)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def to_dict(self) -> dict:
        return _to_plain(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------------- loading


def read_yaml(text: str) -> Any:
    """yaml.safe_load with libyaml's parser where PyYAML has it (a run's config.yaml: 4 ms instead of 31)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):  # a class's own fields before the keyword-only ones it builds on
        fields = sorted(dataclasses.fields(obj), key=lambda f: f.kw_only)
        return {f.name: _to_plain(getattr(obj, f.name)) for f in fields}
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_plain(v) for v in obj]
    return obj


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(options))}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        for a in non_none[:-1]:  # the first reading that fits (str | list[float]: "lung" or [0, 3000])
            try:
                return _coerce(a, value, path)
            except ConfigError:
                pass
        return _coerce(non_none[-1], value, path)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if tp is ColumnConfig and isinstance(value, str):
            value = {"role": value}  # shorthand `name: text`
        if tp is TargetConfig and isinstance(value, str):
            value = {"type": value}
        if tp is EncoderConfig and isinstance(value, str):
            value = {"name": value}
        if tp is FinetuneConfig and isinstance(value, str):
            value = {"strategy": value}
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, path)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        return {str(k): _coerce(args[1], v, _join(path, str(k))) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        return [_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is Duration:
        return seconds(value, path)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    return value


@functools.lru_cache(maxsize=None)
def _fields(cls: type) -> tuple[dict, tuple]:
    """A config dataclass's resolved type hints and fields (resolving the string annotations costs most
    of a config's load; every run directory read loads one)."""
    return typing.get_type_hints(cls), dataclasses.fields(cls)


def from_dict(cls: type, raw: dict, path: str = "") -> Any:
    """Build dataclass `cls` from `raw`, raising ConfigError with the dotted path of any bad key."""
    hints, fields = _fields(cls)
    names = [f.name for f in fields]
    for key in raw:
        if key not in names:
            raise ConfigError(f"unknown key '{_join(path, str(key))}'{_suggest(str(key), names)}")
    kwargs = {}
    for f in fields:
        if f.name in raw:
            kwargs[f.name] = _coerce(hints[f.name], raw[f.name], _join(path, f.name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_join(path, f.name)}: required key is missing")
    obj = cls(**kwargs)
    return obj


Overrides = Union[list[str], dict, None]


def apply_overrides(raw: dict, overrides: Overrides) -> dict:
    """Apply overrides to a nested dict: `a.b.c=value` strings (value parsed as YAML), or a dict
    whose keys are dotted paths or nested mappings ({"train.epochs": 3} or {"train": {"epochs": 3}})."""
    if isinstance(overrides, dict):
        for key, value in overrides.items():
            node, last = _node(raw, str(key))
            if isinstance(value, dict) and isinstance(node.get(last), dict):
                apply_overrides(node[last], value)
            else:
                node[last] = _to_plain(value)
        return raw
    for item in overrides or []:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        key, value = item.split("=", 1)
        node, last = _node(raw, key.strip())
        node[last] = read_yaml(value) if value != "" else ""
    return raw


def _node(raw: dict, key: str) -> tuple[dict, str]:
    """The mapping a dotted key's last part lives in (made where missing), and that part."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: '{part}' is not a mapping")
    return node, parts[-1]


FILE_KINDS = ("image", "audio", "video")  # column roles whose cells are files
TABLE_ROLES = ("numeric", "categorical", "datetime", "vector")  # column roles merged into the one `tabular` modality


def input_fields(d: DataConfig) -> dict[str, str]:
    """The manifest columns a row of new data brings, and their roles: every input column but those
    that read another (a video's sound track), plus such a source when it is no input itself."""
    out = {c: cc.role for c, cc in d.columns.items() if cc.source is None}
    for cc in d.columns.values():
        if cc.source is not None and cc.source not in d.columns:
            out.setdefault(cc.source, cc.role)
    return out


def modality_kinds(cfg: Config) -> dict[str, str]:
    """Every modality of the config and its kind: file and text columns by name, plus `tabular` when
    there are numeric, categorical or datetime columns."""
    out = {c: cc.role for c, cc in cfg.data.columns.items() if cc.role in FILE_KINDS + ("text",)}
    if any(cc.role in TABLE_ROLES for cc in cfg.data.columns.values()):
        out["tabular"] = "tabular"
    return out


def _resolve_defaults(cfg: Config) -> None:
    """`name: auto` becomes the registered default encoder of the modality's kind, and an unset image
    size the one the image encoders were trained at: the run records what it really used."""
    from mmfit.registry import default_encoder, encoder_info

    kinds = modality_kinds(cfg)
    for key, enc in cfg.model.encoders.items():
        kind = cfg.data.columns[key].role if key in cfg.data.columns else key
        kind = "tabular" if kind in TABLE_ROLES else kind
        if enc.name == "auto" and kind in ("text", "image", "audio", "video", "tabular"):
            enc.name = default_encoder(kind)
    for m, kind in kinds.items():
        ec = encoder_config(cfg, m)
        if ec.name == "auto":
            cfg.model.encoders[m] = dataclasses.replace(ec, name=default_encoder(kind))
    if cfg.data.image.size is None:
        sizes = [encoder_info(encoder_config(cfg, m).name).input_size for m, k in kinds.items()
                 if k == "image" or (k == "video" and cfg.data.video.size is None)]
        cfg.data.image.size = max([s for s in sizes if s] or [64])


def _check_encoders(cfg: Config) -> None:
    from mmfit.registry import FUSIONS, encoder_info

    kinds = {"text", "image", "audio", "video", "tabular"}
    modality_names = set(cfg.data.columns) | kinds
    for key, enc in cfg.model.encoders.items():
        where = f"model.encoders.{key}"
        if key not in modality_names:
            raise ConfigError(f"unknown key '{where}'{_suggest(key, sorted(modality_names))}")
        info = encoder_info(enc.name, f"{where}.name")
        kind = cfg.data.columns[key].role if key in cfg.data.columns else key  # a column's own name first
        kind = "tabular" if kind in TABLE_ROLES else kind
        if not info.encodes(kind):
            raise ConfigError(f"{where}.name: encoder '{enc.name}' encodes {', '.join(info.kinds)}, "
                              f"not {kind}")
        ft = enc.finetune
        if ft.strategy == "partial" and ft.layers < 0:
            raise ConfigError(f"{where}.finetune.layers: must be >= 0, got {ft.layers}")
        if ft.r < 1:
            raise ConfigError(f"{where}.finetune.r: must be >= 1, got {ft.r}")
        if not 0 < ft.layer_decay <= 1:
            raise ConfigError(f"{where}.finetune.layer_decay: must be in (0, 1], got {ft.layer_decay}")
        if (enc.keep_layers or enc.trim_vocab or enc.embed_rank) and not info.hf_model:
            raise ConfigError(f"{where}: keep_layers, embed_rank and trim_vocab apply to pretrained "
                              f"transformer encoders (hf, minilm), not {enc.name!r}")
        if enc.embed_rank is not None and (enc.embed_rank < 1 or enc.trim_vocab):
            raise ConfigError(f"{where}.embed_rank: must be >= 1 and not combined with trim_vocab, "
                              f"got {enc.embed_rank}")
        if enc.keep_layers is not None and enc.keep_layers < 1:
            raise ConfigError(f"{where}.keep_layers: must be >= 1, got {enc.keep_layers}")
        side = enc.input_size or (cfg.data.video.size if kind == "video" else None) or cfg.data.image.size
        if kind in ("image", "video") and side is not None and side < info.min_size:
            raise ConfigError(f"{where}: encoder '{enc.name}' needs images of at least {info.min_size} px, but they "
                              f"reach it at {side} (data.image.size, or the encoder's input_size)")
        if enc.patch & (enc.patch - 1) or enc.patch < 1:
            raise ConfigError(f"{where}.patch: must be a power of two, got {enc.patch}")
    FUSIONS.check(cfg.model.fusion, "model.fusion")
    mc = cfg.model
    if mc.head not in ("linear", "neighbours", "convex", "trees"):
        raise ConfigError(f"model.head: 'linear', 'neighbours', 'convex' or 'trees', got {mc.head!r}")
    if mc.crossfit.folds < 2 or mc.crossfit.rows not in ("train", "labelled") or \
            mc.crossfit.choose_on not in ("folds", "val"):
        raise ConfigError(f"model.crossfit: folds >= 2, rows train or labelled, choose_on folds or val; got "
                          f"folds={mc.crossfit.folds}, rows={mc.crossfit.rows!r}, choose_on={mc.crossfit.choose_on!r}")
    nb = mc.neighbours
    if (nb.k is not None and nb.k < 1) or (nb.temperature is not None and not nb.temperature > 0) or nb.max_rows < 1:
        raise ConfigError(f"model.neighbours: k and max_rows must be >= 1 and temperature > 0, got k={nb.k}, "
                          f"temperature={nb.temperature}, max_rows={nb.max_rows}")


def _check_augment(a: AugmentConfig) -> None:
    chances = {"image.crop": a.image.crop, "image.hflip": a.image.hflip, "image.vflip": a.image.vflip,
               "image.blur": a.image.blur, "audio.noise_p": a.audio.noise_p, "audio.shift": a.audio.shift,
               "text.token_dropout": a.text.token_dropout, "text.swap": a.text.swap,
               "text.deletion": a.text.deletion, "mixup_p": a.mixup_p, "video.frame_drop": a.video.frame_drop}
    for key, v in chances.items():
        if not 0 <= v <= 1:
            raise ConfigError(f"augment.{key}: must be between 0 and 1, got {v}")
    for key, v in {"image.rotate": a.image.rotate, "image.jitter": a.image.jitter, "image.noise": a.image.noise,
                   "audio.gain_db": a.audio.gain_db, "tabular.jitter": a.tabular.jitter, "mixup": a.mixup,
                   "audio.time_masks": a.audio.time_masks, "audio.freq_masks": a.audio.freq_masks}.items():
        if v < 0:
            raise ConfigError(f"augment.{key}: must be >= 0, got {v}")


def _check_matching(cfg: Config) -> None:
    kinds = modality_kinds(cfg)
    for t, tc in cfg.data.targets.items():
        kind = task_kind(tc.type)
        if kind.writes and (tc.beam < 1 or tc.max_length < 3 or tc.decoder_layers < 1):
            raise ConfigError(f"data.targets.{t}: a generation task needs beam >= 1, max_length >= 3 and "
                              "decoder_layers >= 1")
        if kind.writes and cfg.augment.mixup > 0:
            raise ConfigError(f"data.targets.{t}: mixup mixes targets, which a generated text cannot be: "
                              "set augment.mixup: 0")
        if kind.writes and tc.decoder == "ctc":
            _check_ctc(cfg, t, tc, kinds)
        elif tc.source:
            raise ConfigError(f"data.targets.{t}.source: only a generation task with decoder: ctc reads one column")
        if not kind.paired:
            if tc.between:
                raise ConfigError(f"data.targets.{t}.between: only a matching task pairs columns")
            continue
        b = tc.between or []
        if len(b) != 2 or b[0] == b[1] or any(m not in kinds for m in b):
            raise ConfigError(f"data.targets.{t}.between: a matching task names two different input columns "
                              f"(or tabular), e.g. between: [{', '.join(list(kinds)[:2])}]; got {tc.between}")


def _check_ctc(cfg: Config, t: str, tc: TargetConfig, kinds: dict[str, str]) -> None:
    """A CTC head transcribes one audio column from its encoder's frames; it fills `source` in."""
    audio = [m for m, k in kinds.items() if k == "audio"]
    if tc.source is None and len(audio) == 1:
        tc.source = audio[0]
    if tc.source not in audio:
        raise ConfigError(f"data.targets.{t}.source: decoder: ctc transcribes an audio column; name one of "
                          f"{audio or 'the audio columns (there are none)'}, got {tc.source!r}")
    if tc.beam != 1:
        raise ConfigError(f"data.targets.{t}.beam: decoder: ctc decodes each frame's most likely character (best "
                          "path); without a language model a beam changes next to nothing: set beam: 1")
    name = encoder_config(cfg, tc.source).name
    if name == "audio-stats":
        raise ConfigError(f"data.targets.{t}: decoder: ctc reads the frames of {tc.source}'s encoder, and "
                          "audio-stats keeps none (clip statistics): use the scratch or an hf audio encoder")


def _check_adversarial(cfg: Config) -> None:
    a = cfg.train.adversarial
    if a.method == "none":
        return
    kinds = modality_kinds(cfg)
    allowed = [m for m, k in kinds.items() if k in ("image", "audio", "video", "text")]
    for m in a.modalities or []:
        if m not in allowed:
            raise ConfigError(f"train.adversarial.modalities: '{m}' is not an image, audio, video or text input "
                              f"(those are: {', '.join(allowed) or 'none'})")
    if not (a.modalities or allowed):
        raise ConfigError("train.adversarial: there is no image, audio or text input to perturb")
    bad = {k: v for k, v in a.epsilon.items() if k not in ("image", "audio", "text") or not v > 0}
    if bad:  # a video's frames take the image epsilon
        raise ConfigError(f"train.adversarial.epsilon: one positive value per kind (image, audio, text), got {bad}")
    if a.steps < 1 or not 0 < a.weight <= 1 or (a.step_size is not None and not a.step_size > 0):
        raise ConfigError("train.adversarial: steps >= 1, 0 < weight <= 1 and step_size > 0 needed")
    if cfg.augment.mixup > 0:
        raise ConfigError("train.adversarial: mixup and adversarial training do not combine (the attack needs "
                          "each row's own target): set augment.mixup: 0")


def _check_sources(d: DataConfig) -> None:
    """A column that reads another (`source`): a file column reading a manifest column of file paths (an
    input column of a file role, or a column that is no input: a sound track without its video)."""
    for c, cc in d.columns.items():
        if cc.source is None:
            continue
        src = d.columns.get(cc.source)
        if cc.source == c or cc.source in d.targets or (src is not None and src.source is not None):
            raise ConfigError(f"data.columns.{c}.source: '{cc.source}' must name another column of the manifest, "
                              "not a target or a column that reads another")
        if cc.role not in FILE_KINDS or (src is not None and src.role not in FILE_KINDS):
            raise ConfigError(f"data.columns.{c}.source: a file column ({', '.join(FILE_KINDS)}) reads another file "
                              f"column's paths (e.g. role: audio, source: a video column: its sound track); "
                              f"'{c}' is {cc.role}" + (f", '{cc.source}' is {src.role}" if src else ""))


def _check_pretrain(p: PretrainConfig) -> None:
    if min(p.mlm, p.masked_patches, p.contrastive) < 0:
        raise ConfigError("pretrain: the objectives' weights (mlm, masked_patches, contrastive) must be >= 0")
    for key in ("text_mask", "patch_mask"):
        if not 0 < getattr(p, key) < 1:
            raise ConfigError(f"pretrain.{key}: must be in (0, 1), got {getattr(p, key)}")
    if p.proj_dim < 1 or p.temperature <= 0:
        raise ConfigError("pretrain: proj_dim must be >= 1 and temperature > 0")


def _check_tune(t: TuneConfig) -> None:
    for key, sp in t.space.items():
        where = f"tune.space.{key}"
        if sp.choices:  # any type may list its values (a grid)
            continue
        if sp.type == "categorical":
            raise ConfigError(f"{where}: a categorical parameter needs `choices`")
        if sp.low is None or sp.high is None or not sp.low < sp.high:
            raise ConfigError(f"{where}: a {sp.type} parameter needs low < high, got low={sp.low}, high={sp.high}")
        elif sp.log and sp.low <= 0:
            raise ConfigError(f"{where}: a log-scale range must be positive, got low={sp.low}")
    if t.trials < 1:
        raise ConfigError(f"tune.trials: must be >= 1, got {t.trials}")


def _check_window(w) -> None:
    if isinstance(w, str):
        if w not in ("auto", "per_image") and w not in WINDOWS:
            close = difflib.get_close_matches(w, ["auto", "per_image", *WINDOWS], n=1, cutoff=0.5)
            raise ConfigError(f"data.image.window: {w!r} is not auto, per_image or a preset ({', '.join(WINDOWS)})"
                              + (f"; did you mean '{close[0]}'?" if close else "") + "; or give [low, high]")
    elif len(w) != 2 or not w[0] < w[1]:
        raise ConfigError(f"data.image.window: expected [low, high] with low < high, got {w}")


PRETRAIN_TERMS = ("mlm", "patches", "contrastive")  # the prefixes of models/pretrain.py's loss terms


def _check_train(cfg: Config) -> None:
    tc = cfg.train
    if tc.loader_workers is not None and tc.loader_workers < 0:
        raise ConfigError(f"train.loader_workers: must be >= 0, got {tc.loader_workers}")
    if not 0 <= tc.modality_dropout < 1:
        raise ConfigError(f"train.modality_dropout: must be in [0, 1), got {tc.modality_dropout}")
    pretraining_term = (tc.monitor or "").split("/")[0] in PRETRAIN_TERMS  # `mmfit pretrain` reads these
    if tc.monitor is not None and "/" not in tc.monitor and tc.monitor not in ("loss", "log_loss"):
        raise ConfigError(f"train.monitor: {tc.monitor!r} must be 'loss' or '<task>/<metric>', e.g. "
                          f"'{next(iter(cfg.data.targets), 'diagnosis')}/macro_f1' (pretraining: 'log_loss' "
                          f"or a term, e.g. 'contrastive/image~text')")
    if tc.monitor and "/" in tc.monitor and not pretraining_term:
        task = tc.monitor.split("/")[0]
        if task not in cfg.data.targets:
            raise ConfigError(f"train.monitor: task '{task}' is not a target{_suggest(task, list(cfg.data.targets))}")
    kd = cfg.distill
    if not 0 <= kd.alpha <= 1 or kd.temperature <= 0 or kd.feature_weight < 0:
        raise ConfigError("distill: alpha must be in [0, 1], temperature > 0 and feature_weight >= 0")


def validate(cfg: Config, need_targets: bool = True) -> Config:
    """Checks that span several keys (single keys are checked while loading). `need_targets=False`:
    `mmfit pretrain`, which learns from the inputs alone."""
    if not cfg.data.columns:
        raise ConfigError("data.columns: at least one input column is needed")
    if not cfg.data.targets and need_targets:
        raise ConfigError("data.targets: at least one target is needed to train (the column to predict); "
                          "rows without targets can pretrain the encoders: mmfit pretrain CONFIG")
    both = set(cfg.data.columns) & set(cfg.data.targets)
    if both:
        raise ConfigError(f"data.columns and data.targets both name {sorted(both)}")
    _check_matching(cfg)
    _resolve_defaults(cfg)
    _check_encoders(cfg)
    _check_augment(cfg.augment)
    _check_tune(cfg.tune)
    _check_pretrain(cfg.pretrain)
    _check_adversarial(cfg)
    _check_train(cfg)
    _check_window(cfg.data.image.window)
    _check_sources(cfg.data)
    if cfg.data.video.frames < 1 or (cfg.data.video.size is not None and cfg.data.video.size < 8):
        raise ConfigError(f"data.video: frames >= 1 and size >= 8 needed, got frames {cfg.data.video.frames}, "
                          f"size {cfg.data.video.size}")
    if cfg.data.shard_rows < 1:
        raise ConfigError(f"data.shard_rows: must be >= 1, got {cfg.data.shard_rows}")
    for name in cfg.recipe.exclude:
        if name not in RECIPE_MEMBERS[1:]:
            raise ConfigError(f"recipe.exclude: {name!r} is not a member kind that can be left out (convex, trees, "
                              "neighbours, finetune, scratch; the probe is what the others start from)")
    s = cfg.data.split
    if not (0 <= s.val < 1 and 0 <= s.test < 1 and s.val + s.test < 1):
        raise ConfigError("data.split: val and test must be fractions summing to less than 1")
    return cfg


def read_config_file(path: Union[str, Path]) -> dict:
    """A config file's YAML as a dict, not yet validated (for callers that fill in parts first); a
    missing file, bad YAML or a top level that is not a mapping is a ConfigError naming the file."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = read_yaml(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping")
    return raw


def load_config(source: Union[str, Path, dict, None] = None, overrides: Overrides = None,
                need_targets: bool = True) -> Config:
    """Load a YAML file (or dict), apply dotted overrides, validate; errors name the key path."""
    if source is None:
        raw: dict = {}
    elif isinstance(source, dict):
        raw = _to_plain(source)
    else:
        raw = read_config_file(source)
    raw = apply_overrides(raw, overrides)
    return validate(from_dict(Config, raw), need_targets)


def modality_kind(cfg: Config, modality: str) -> str:
    """text/image/audio for a column modality; 'tabular' for the merged numeric, categorical and
    datetime one."""
    if modality == "tabular":
        return "tabular"
    return cfg.data.columns[modality].role


def encoder_config(cfg: Config, modality: str) -> EncoderConfig:
    """The encoder for a modality: by column name first, then by kind (a loaded config has one for
    every modality: validate() fills in the defaults)."""
    enc = cfg.model.encoders
    return enc.get(modality) or enc.get(modality_kind(cfg, modality)) or EncoderConfig()


# ---------------------------------------------------------------------------- the reference (docs/config.md)


def _field_notes(cls: type) -> dict[str, str]:
    """Each field's comment in the source: the `#` lines above it and the one after it."""
    import inspect

    notes: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        above: list[str] = []
        for line in inspect.getsource(klass).splitlines()[1:]:
            text = line.strip()
            if text.startswith("#"):
                above.append(text.lstrip("# "))
                continue
            name = text.split(":", 1)[0] if ":" in text and not text.startswith(("def ", '"', "@")) else ""
            if name.isidentifier():
                after = text.split("  # ", 1)[1] if "  # " in text else ""
                notes[name] = " ".join(above + ([after] if after else []))
            above = []
    return notes


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Duration:
        return "duration (600, 90s, 10m, 1h)"
    if origin is Literal:
        return " \\| ".join(map(str, args))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + (" or null" if type(None) in args else "")
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


def reference() -> str:
    """docs/config.md: every key of the config with its type, default and comment, read from the
    dataclasses above (a test checks that the file is what this returns: it cannot drift)."""
    lines = ["# Config reference", "", "Generated from `src/mmfit/config.py` by `python -m mmfit.config > docs/config.md`"
             " (a test fails when they differ). Keys are set in the YAML file or as dotted overrides "
             "(`train.epochs=5`, or `{\"train.epochs\": 5}` in Python).", ""]

    def walk(cls: type, path: str) -> None:
        doc = " ".join((cls.__doc__ or "").split()) if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "(") else ""
        lines.extend([f"## `{path}`", ""] + ([doc, ""] if doc else []) + ["| key | type | default | meaning |", "|---|---|---|---|"])
        hints, notes, nested = typing.get_type_hints(cls), _field_notes(cls), []
        for f in sorted(dataclasses.fields(cls), key=lambda f: f.kw_only):
            tp = hints[f.name]
            value = typing.get_args(tp)[1] if typing.get_origin(tp) is dict else None
            if value is not None and dataclasses.is_dataclass(value):
                nested.append((value, f"{path}.{f.name}.<name>"))
                lines.append(f"| `{f.name}` | mapping of name to section | see `{path}.{f.name}.<name>` | "
                             f"{notes.get(f.name, '').replace('|', '/')} |")
                continue
            if dataclasses.is_dataclass(tp):
                nested.append((tp, f"{path}.{f.name}"))
                lines.append(f"| `{f.name}` | section | see `{path}.{f.name}` | {notes.get(f.name, '')} |")
                continue
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
            shown = json_default(default)
            lines.append(f"| `{f.name}` | {_type_name(tp)} | {shown} | {notes.get(f.name, '').replace('|', '/')} |")
        lines.append("")
        for tp, sub in nested:
            walk(tp, sub)

    for f in dataclasses.fields(Config):
        walk(typing.get_type_hints(Config)[f.name], f.name)
    return "\n".join(lines).rstrip() + "\n"


def json_default(value: Any) -> str:
    if value == "(required)":
        return value
    text = yaml.safe_dump(_to_plain(value), default_flow_style=True).strip()
    text = text[:-4].strip() if text.endswith("\n...") else text.removesuffix("...").strip()
    return f"`{text}`".replace("|", "/")


if __name__ == "__main__":
    print(reference(), end="")
