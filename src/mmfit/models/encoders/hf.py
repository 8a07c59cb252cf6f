"""Any local Hugging Face model directory as a text, vision or audio encoder (never the hub)."""

from __future__ import annotations

import contextlib
import inspect
import json
from pathlib import Path

import torch
from torch import nn

from mmfit.models.contract import EncoderOutput, masked_mean
from mmfit.models.encoders.spec import EncoderSpec
from mmfit.registry import ENCODERS, EncoderInfo


def _image_stats(path: Path) -> tuple[list[float], list[float]]:
    f = path / "preprocessor_config.json"
    if f.exists():
        c = json.loads(f.read_text())
        if "image_mean" in c and "image_std" in c:
            return list(c["image_mean"]), list(c["image_std"])
    return [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


class FactorizedEmbedding(nn.Module):
    """A [vocab, dim] embedding table as [vocab, rank] @ [rank, dim] (ALBERT-style), started from the
    truncated SVD of a pretrained table: every token keeps a vector at a fraction of the size."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.low = nn.Embedding(num_embeddings, rank)
        self.up = nn.Linear(rank, embedding_dim, bias=False)

    @classmethod
    @torch.no_grad()
    def from_embedding(cls, emb: nn.Embedding, rank: int) -> "FactorizedEmbedding":
        w = emb.weight.float()
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        new = cls(w.shape[0], w.shape[1], rank)
        new.low.weight.copy_(u[:, :rank] * s[:rank])
        new.up.weight.copy_(vh[:rank].T)
        return new

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.up(self.low(ids))


def _no_init():
    """Transformers' own switch that skips the random initialisation (MiniLM: 0.34 s of 0.4 s to build)
    of a model whose weights are loaded next, as from_pretrained does; a no-op where it is missing."""
    try:
        from transformers.initialization import no_init_weights  # transformers 5
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights  # transformers 4
        except ImportError:
            return contextlib.nullcontext()
    return no_init_weights()


class HFEncoder(nn.Module):
    def __init__(self, s: EncoderSpec):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if not s.path:
            raise ValueError("hf encoder needs `path`: a local Hugging Face model directory")
        path = Path(s.path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"hf encoder: {path} has no config.json (a local model directory is needed)")
        self.kind = s.kind
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        if s.keep_layers:
            n = getattr(config, "num_hidden_layers", None)
            if n is None or s.keep_layers > n:
                raise ValueError(f"keep_layers: {path} has {n} layers, cannot keep {s.keep_layers}")
            config.num_hidden_layers = s.keep_layers  # the first layers' weights load, the rest are not built
        if s.load_weights:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # mmfit shows its own progress
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # with keep_layers, the unused layers' weights are reported
            try:
                self.model = AutoModel.from_pretrained(str(path), config=config, local_files_only=True)
            finally:
                hf_logging.set_verbosity(verbosity)
        else:  # rebuilt from a run directory: its weights are loaded over these right after
            with _no_init():
                self.model = AutoModel.from_config(config)
        if s.embed_rank and s.kind == "text":
            emb = self.model.get_input_embeddings()
            if s.load_weights:
                new = FactorizedEmbedding.from_embedding(emb, s.embed_rank)
            else:  # weights come from the run's model.safetensors
                new = FactorizedEmbedding(emb.num_embeddings, emb.embedding_dim, s.embed_rank)
            self.model.set_input_embeddings(new)
        if s.trim_vocab and s.kind == "text":
            self.register_buffer("id_map", torch.arange(self.model.get_input_embeddings().num_embeddings))
        c = self.model.config
        self.dim = int(getattr(c, "hidden_size", 0) or (getattr(c, "hidden_sizes", None) or [0])[-1])
        mean, std = _image_stats(path)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self._interp = "interpolate_pos_encoding" in inspect.signature(self.model.forward).parameters
        self.source = path

    @torch.no_grad()
    def trim_vocab(self, token_ids: torch.Tensor, keep_ids: list[int]) -> tuple[int, int]:
        """Keep only the embedding rows of `token_ids` (the training data's) and `keep_ids`
        (special tokens); other ids map to the first of `keep_ids` (the unknown token).
        -> (rows before, rows after)."""
        emb = self.model.get_input_embeddings()
        keep = torch.unique(torch.cat([token_ids.flatten(), torch.tensor(keep_ids)]))
        new = nn.Embedding(len(keep), emb.embedding_dim, padding_idx=None)
        new.weight.copy_(emb.weight[keep])
        self.id_map.fill_(int((keep == keep_ids[0]).nonzero()[0, 0]))
        self.id_map[keep] = torch.arange(len(keep))
        self.model.set_input_embeddings(new)
        return emb.num_embeddings, len(keep)

    def save_architecture(self, directory: Path) -> None:
        """What a run directory needs to rebuild this encoder without the original files."""
        directory.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(str(directory))
        pc = self.source / "preprocessor_config.json"
        if pc.exists():
            (directory / "preprocessor_config.json").write_text(pc.read_text())

    def forward(self, inputs: dict) -> EncoderOutput:
        if self.kind == "text":
            mask, ids = inputs["attention_mask"], inputs["input_ids"]
            full = ids.shape[1]
            if not torch.jit.is_tracing() and full > 1:
                # padding is masked out of attention and of the mean: the batch runs cut to its longest
                # text (short texts padded to max_length cost many times their length otherwise), and
                # its tokens are padded back, so the output keeps the input's length
                n = max(1, int(mask.sum(1).max()))
                ids = ids[:, :n]
            ids = self.id_map[ids] if hasattr(self, "id_map") else ids
            out = self.model(input_ids=ids, attention_mask=mask[:, : ids.shape[1]].long())
            tokens = nn.functional.pad(out.last_hidden_state, (0, 0, 0, full - ids.shape[1]))
            return EncoderOutput(tokens, mask, masked_mean(tokens, mask))
        if self.kind == "image":
            x = (inputs["x"] - self.mean) / self.std
            kw = {"interpolate_pos_encoding": True} if self._interp else {}
            out = self.model(pixel_values=x, **kw)
        else:
            out = self.model(input_values=inputs["x"])
        tokens = out.last_hidden_state
        if tokens.dim() == 4:  # conv backbones: [B, C, H, W] -> tokens
            tokens = tokens.flatten(2).transpose(1, 2)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None or pooled.dim() != 2 or pooled.shape[-1] != tokens.shape[-1]:
            pooled = tokens.mean(1)
        return EncoderOutput(tokens, mask, pooled)


# normalisation and input size come from the model directory's preprocessor_config.json
@ENCODERS.register("hf", info=EncoderInfo(kinds=("text", "image", "audio"), pretrained=True, hf_model=True,
                                          tokenizer=lambda path: path, audio_features="waveform"))
def build_hf(s: EncoderSpec) -> nn.Module:
    return HFEncoder(s)
