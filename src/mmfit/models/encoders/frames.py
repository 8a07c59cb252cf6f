"""Video (and volumes): each frame through an image encoder, then attention over time.

Any registered image encoder encodes a `video` column (the packaged pretrained one by default): the
frames [B, T, 3, H, W] go through it as one batch of B*T images, each frame's pooled vector becomes one
token (layer-normed, plus a learned position in time), and the clip's vector is the gated attention
pooling of its frames (Ilse et al., 2018, as multiple-instance learning pools a volume's slices): a
score per frame from tanh(V h) * sigmoid(U h), softmax over time. The scorer starts at zero (the mean
of the frames), so a frozen image encoder plus this pooling starts as a probe on mean features.

The fine-tuning strategy applies to the image encoder (`backbone`); the temporal part is new and
always trains. With the image encoder frozen, its per-frame vectors are what training/embeddings.py
computes once (`front_outputs`), and `forward` takes them (`frame_features`) in place of the pixels.
"""

from __future__ import annotations

import torch
from torch import nn

from mmfit.models.contract import EncoderOutput
from mmfit.models.finetune import is_frozen


class FrameEncoder(nn.Module):
    def __init__(self, frames: nn.Module, count: int, hidden: int = 128):
        super().__init__()
        self.frames = frames
        self.count = count  # frames a clip
        self.dim = frames.dim
        d = self.dim
        self.norm = nn.LayerNorm(d)
        self.position = nn.Parameter(torch.zeros(count, d))
        self.v = nn.Linear(d, hidden)
        self.u = nn.Linear(d, hidden)
        self.score = nn.Linear(hidden, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    @property
    def backbone(self) -> nn.Module:
        """The part a fine-tuning strategy applies to (pretrained weights, their small learning rate)."""
        return self.frames

    front_names = ("frame_features",)  # what front_outputs gives, and forward takes in place of "x"

    def front_outputs(self, inputs: dict) -> dict[str, torch.Tensor]:
        """What a frozen image encoder makes of the pixels: each frame's pooled vector [B, T, D]."""
        return {"frame_features": self.frame_features(inputs["x"])}

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        flat = x.reshape(b * t, *x.shape[2:])
        if is_frozen(self.frames) and not x.requires_grad:  # nothing to learn there, no gradient asked
            with torch.no_grad():
                pooled = self.frames({"x": flat}).pooled
        else:
            pooled = self.frames({"x": flat}).pooled
        return pooled.reshape(b, t, -1)

    def forward(self, inputs: dict) -> EncoderOutput:
        f = inputs["frame_features"] if "frame_features" in inputs else self.frame_features(inputs["x"])
        f = f.to(self.position.dtype)
        tokens = self.norm(f) + self.position[: f.shape[1]]
        score = self.score(torch.tanh(self.v(tokens)) * torch.sigmoid(self.u(tokens))).squeeze(-1)  # [B, T]
        weights = torch.softmax(score.float(), dim=1).to(tokens.dtype)
        pooled = (weights.unsqueeze(-1) * tokens).sum(1)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens, mask, pooled)
