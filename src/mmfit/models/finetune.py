"""Fine-tuning strategies per encoder: full, frozen, partial, LoRA, IA3, BitFit; layer-wise LR decay;
the adapters' weights and config in peft's format; folding adapters into the base weights.

Every encoder meets the same contract, so one code path serves from-scratch, local Hugging Face
and packaged encoders. LoRA and IA3 come from `peft` (`inject_adapter_in_model`, so the encoder
keeps its own class and forward); the adapter target modules are chosen per model family.
Fusion, heads and auxiliary heads are never touched here: they always train and are always saved
in the run's model.safetensors (no head lost on reload). Writing adapters to disk is the run
directory's business (mmfit.run.store); this module only hands out what to write.
"""

from __future__ import annotations

from torch import nn

from mmfit.config import FinetuneConfig

PEFT_HINT = "LoRA and IA3 need the peft package: pip install peft (or pip install 'mmfit[finetune]')"
ADAPTER = "default"


# ---------------------------------------------------------------------------- blocks


def block_list(encoder: nn.Module) -> tuple[str, int]:
    """The encoder's stack of blocks: the ModuleList holding the most parameters
    (BERT `encoder.layer`, ViT `encoder.layer`, EfficientNet `_blocks`, our `encoder.layers`).
    -> (its dotted name, number of blocks); ('', 0) when the encoder has none."""
    best, best_n, best_size = "", 0, 0
    for name, mod in encoder.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod):
            size = sum(p.numel() for p in mod.parameters())
            if size > best_size:
                best, best_n, best_size = name, len(mod), size
    return best, best_n


def block_index(param_name: str, blocks: str, n: int, order: dict[str, int], first_after: int) -> int:
    """-1 for parameters before the blocks (embeddings, stems), i for block i, n for those after."""
    prefix = blocks + "."
    if blocks and param_name.startswith(prefix):
        return int(param_name[len(prefix):].split(".", 1)[0])
    return n if order[param_name] >= first_after else -1


def param_blocks(encoder: nn.Module) -> tuple[dict[str, int], int]:
    """Each parameter's block index (see block_index) and the number of blocks."""
    blocks, n = block_list(encoder)
    names = [k for k, _ in encoder.named_parameters()]
    order = {k: i for i, k in enumerate(names)}
    inside = [order[k] for k in names if blocks and k.startswith(blocks + ".")]
    first_after = (max(inside) + 1) if inside else len(names)
    return {k: block_index(k, blocks, n, order, first_after) for k in names}, n


# ---------------------------------------------------------------------------- targets


def _leaf_names(encoder: nn.Module, types: tuple) -> set[str]:
    return {n.rsplit(".", 1)[-1] for n, m in encoder.named_modules() if n and isinstance(m, types)}


def default_targets(encoder: nn.Module, strategy: str) -> tuple[list[str], list[str]]:
    """-> (target_modules, feedforward_modules) for `lora` or `ia3`, by model family.

    transformers 5 names ViT/AST/CLIP attention projections q_proj/k_proj/v_proj, BERT-style models
    query/key/value; EfficientNet is convolutional (1x1 expand/project convolutions); our own
    transformer blocks (torch's TransformerEncoderLayer) adapt their feed-forward linears, because
    nn.MultiheadAttention reads its projection weights directly and would bypass an adapter.
    """
    linear = _leaf_names(encoder, (nn.Linear,))
    convs = _leaf_names(encoder, (nn.Conv2d,))
    names = {n for n, _ in encoder.named_modules()}
    if {"q_proj", "v_proj"} <= linear:
        ffn_out = "fc2" if "fc2" in linear else ("output.dense" if any(n.endswith("output.dense") for n in names)
                                                else None)
        if strategy == "lora":
            return ["q_proj", "v_proj"], []
        return ["k_proj", "v_proj"] + ([ffn_out] if ffn_out else []), [ffn_out] if ffn_out else []
    if {"query", "value"} <= linear:
        if strategy == "lora":
            return ["query", "value"], []
        return ["key", "value", "output.dense"], ["output.dense"]
    if {"_expand_conv", "_project_conv"} <= convs:
        return ["_expand_conv", "_project_conv"], (["_project_conv"] if strategy == "ia3" else [])
    if {"linear1", "linear2"} <= linear:
        return ["linear1", "linear2"], (["linear2"] if strategy == "ia3" else [])
    if linear:
        return sorted(linear), []
    raise ValueError(f"{strategy}: found no Linear layers to adapt in {type(encoder).__name__}; "
                     "set finetune.target_modules")


# ---------------------------------------------------------------------------- apply


def backbone(encoder: nn.Module) -> nn.Module:
    """The part of an encoder a fine-tuning strategy applies to: the encoder itself, or the image
    encoder inside a video's frame encoder (whose temporal pooling is new and always trains)."""
    return getattr(encoder, "backbone", encoder)


def apply_strategy(encoder: nn.Module, fc: FinetuneConfig, where: str = "encoder") -> nn.Module:
    """Set which parameters of the encoder's backbone train (and inject adapters); returns the encoder.

    Called the same way when training and when rebuilding from a run directory, so the
    module structure — and therefore the saved weights' names — always match."""
    encoder.finetune_strategy = fc.strategy
    _apply(backbone(encoder), fc, where)
    return encoder


def _apply(encoder: nn.Module, fc: FinetuneConfig, where: str) -> None:
    s = fc.strategy
    encoder.finetune_strategy = s
    if s == "full":
        return
    if s in ("lora", "ia3"):
        try:
            import peft
        except ImportError:
            raise ImportError(f"{where}: finetune '{s}': {PEFT_HINT}") from None
        targets, ff = default_targets(encoder, s)
        if fc.target_modules:
            targets = list(fc.target_modules)
            ff = [m for m in (fc.feedforward_modules or ff) if m in targets]
        elif fc.feedforward_modules is not None:
            ff = list(fc.feedforward_modules)
        if s == "lora":
            pc = peft.LoraConfig(r=fc.r, lora_alpha=fc.alpha, lora_dropout=fc.dropout, target_modules=targets,
                                 bias="none")
        else:
            pc = peft.IA3Config(target_modules=targets, feedforward_modules=ff)
        try:
            peft.inject_adapter_in_model(pc, encoder, adapter_name=ADAPTER)
        except ValueError as e:
            raise ValueError(f"{where}: finetune '{s}' with target_modules {targets}: {e}") from None
        for name, p in encoder.named_parameters():
            p.requires_grad_(f"{s}_" in name)  # lora_A / lora_B / ia3_l
        return
    if s == "frozen":
        trainable = lambda name: False  # noqa: E731
    elif s == "bitfit":
        trainable = lambda name: name.endswith("bias")  # noqa: E731
    elif s == "partial":
        index, n = param_blocks(encoder)
        if n == 0:
            raise ValueError(f"{where}: finetune 'partial' needs an encoder with a stack of blocks")
        first = max(0, n - fc.layers)  # the embeddings (index -1) never train under `partial`
        trainable = lambda name: index[name] >= first  # noqa: E731
    else:
        raise ValueError(f"{where}: unknown finetune strategy {s!r}")
    for name, p in encoder.named_parameters():
        p.requires_grad_(trainable(name))


def is_frozen(encoder: nn.Module) -> bool:
    return not any(p.requires_grad for p in encoder.parameters())


def layer_lr_scales(encoder: nn.Module, decay: float) -> dict[str, float]:
    """Layer-wise learning-rate decay: the top of the encoder trains at its full rate, each block
    below at `decay` times the one above, the embeddings/stem at the lowest."""
    index, n = param_blocks(encoder)
    return {k: decay ** (n - 1 - min(i, n - 1)) if i >= 0 else decay ** n for k, i in index.items()}


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """-> (all, trainable)."""
    total = sum(p.numel() for p in module.parameters())
    return total, sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameter_summary(model: nn.Module) -> dict:
    """What params.json holds: parameters, trainable ones, and both per encoder and strategy."""
    n_params, n_train = count_parameters(model)
    return {"params": n_params, "trainable": n_train, **trainable_summary(model)}


# ---------------------------------------------------------------------------- adapters on disk


def has_adapters(encoder: nn.Module) -> bool:
    return hasattr(encoder, "peft_config")


def adapter_states(model: nn.Module) -> dict[str, tuple[dict, dict]]:
    """Per adapted encoder: (its adapter tensors, its adapter config) in peft's format — the small,
    portable part of the model (model.safetensors holds the whole model too)."""
    from peft import get_peft_model_state_dict

    out = {}
    for m, enc in model.encoders.items():
        if has_adapters(enc):
            conf = enc.peft_config[ADAPTER].to_dict()
            conf = {k: (sorted(v) if isinstance(v, set) else v) for k, v in conf.items()}
            out[m] = (get_peft_model_state_dict(enc, adapter_name=ADAPTER), conf)
    return out


def merge_adapters(model: nn.Module) -> dict[str, int]:
    """Fold LoRA/IA3 into the base weights and put plain layers back; -> merged layers per modality.
    The result has the exact module structure of a `full` model, so it loads without peft."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged: dict[str, int] = {}
    for m, enc in model.encoders.items():
        if not has_adapters(enc):
            continue
        count = 0
        for name, mod in list(enc.named_modules()):
            if isinstance(mod, BaseTunerLayer):
                mod.merge(adapter_names=[ADAPTER])
                parent_name, _, child = name.rpartition(".")
                parent = enc.get_submodule(parent_name) if parent_name else enc
                setattr(parent, child, mod.get_base_layer())
                count += 1
        del enc.peft_config
        enc.finetune_strategy = "full"
        merged[m] = count
    return merged


def trainable_summary(model: nn.Module) -> dict[str, dict]:
    """Per encoder: strategy, parameters, trainable; plus the rest (fusion and heads)."""
    out: dict[str, dict] = {}
    enc_ids: set[int] = set()
    for m, enc in model.encoders.items():
        total, train = count_parameters(enc)
        out[m] = {"strategy": getattr(enc, "finetune_strategy", "full"), "params": total, "trainable": train}
        enc_ids |= {id(p) for p in enc.parameters()}
    rest = [p for p in model.parameters() if id(p) not in enc_ids]
    out["fusion+heads"] = {"strategy": "full", "params": sum(p.numel() for p in rest),
                           "trainable": sum(p.numel() for p in rest if p.requires_grad)}
    return out


def summary_line(summary: dict[str, dict]) -> str:
    parts = [f"{m} {v['strategy']} {v['trainable'] / 1e6:.3f}M/{v['params'] / 1e6:.2f}M"
             for m, v in summary.items() if m != "fusion+heads"]
    return "encoders: " + ", ".join(parts)
