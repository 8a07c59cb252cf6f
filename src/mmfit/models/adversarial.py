"""Adversarial perturbations of a batch, for training (`train.adversarial`) and for measuring
robustness: FGSM (Goodfellow et al. 2015), PGD (Madry et al. 2018) and FreeLB (Zhu et al. 2020).

Image and log-mel inputs are perturbed in input space inside an L-inf ball of radius epsilon (an
image stays in [0, 1]); text, whose tokens are discrete, in embedding space: a forward hook adds
the perturbation to the text encoder's token embeddings, each token inside an L2 ball whose radius
is epsilon times the batch's mean token-embedding norm (so one epsilon suits a scratch embedding
and a pretrained one alike). Frozen encoders take part (the model keeps their graph while it is
attacked); a modality whose encoder outputs were cached (frozen, training/embeddings.py) has no
input left to perturb and is left out.

FGSM: one step of epsilon along the gradient's sign from the clean input. PGD: a random start in the
ball, `steps` steps of `step_size` x epsilon (default 2.5 / steps), each projected back. The attack
only reads gradients with respect to the perturbations: the weights' gradients are untouched.
FreeLB: `steps` ascent steps whose losses each add their gradient to the weights (backpropagated
by `free_steps`), so the model learns from the whole path at the cost of the attack alone.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch
from torch import nn

from mmfit.config import AdversarialConfig

EPSILON = {"image": 0.03, "audio": 0.5, "text": 0.05}
PERTURBABLE = ("image", "audio", "video", "text")  # a video's frames are perturbed as images


def precomputed(inputs: dict) -> bool:
    """A modality's inputs replaced by a frozen encoder's outputs (training/embeddings.py): no input left."""
    return "pooled" in inputs or "frame_features" in inputs


def embedding_layer(encoder: nn.Module) -> Optional[nn.Module]:
    """A text encoder's token-embedding module: scratch's `embed`, a Hugging Face model's input
    embeddings (under a PEFT wrapper too), else the first nn.Embedding."""
    if isinstance(getattr(encoder, "embed", None), nn.Module):
        return encoder.embed
    model = getattr(encoder, "model", None)
    if model is not None and hasattr(model, "get_input_embeddings"):
        return model.get_input_embeddings()
    return next((m for m in encoder.modules() if isinstance(m, nn.Embedding)), None)


class Attack:
    """Perturbations of the configured modalities of one model (`kinds`: modality -> its kind)."""

    def __init__(self, cfg: AdversarialConfig, kinds: dict[str, str], method: Optional[str] = None,
                 epsilon: Optional[dict[str, float]] = None):
        self.cfg = cfg
        self.method = method or cfg.method
        self.eps = {**EPSILON, **cfg.epsilon, **(epsilon or {})}
        self.kinds = {m: "image" if k == "video" else k for m, k in kinds.items()
                      if k in PERTURBABLE and (cfg.modalities is None or m in cfg.modalities)}
        self.steps = 1 if self.method == "fgsm" else cfg.steps
        default = 1.0 if self.method == "fgsm" else (2.5 if self.method == "pgd" else 1.0) / self.steps
        self.alpha = cfg.step_size if cfg.step_size is not None and self.method != "fgsm" else default

    def modalities(self, inputs: dict) -> dict[str, str]:
        """The perturbable modalities of this batch (cached encoder outputs have no input left)."""
        return {m: k for m, k in self.kinds.items() if m in inputs and not precomputed(inputs[m])}

    # ------------------------------------------------------------------ the perturbed forward pass
    @contextlib.contextmanager
    def applied(self, model, inputs: dict, deltas: dict, grad: bool = False):
        """-> the inputs with the image/audio perturbations added, while hooks add the text ones.
        Missing perturbations start at zero (the text ones at the first pass: their shape is the
        embeddings'), as leaves that need a gradient when `grad`. `model`: the MultimodalModel."""
        mods = self.modalities(inputs)
        out = dict(inputs)
        for m, k in mods.items():
            if k == "text":
                continue
            x = inputs[m]["x"]
            if m not in deltas:
                deltas[m] = torch.zeros_like(x, dtype=torch.float32).requires_grad_(grad)
            xp = x.float() + deltas[m]
            out[m] = {**inputs[m], "x": (xp.clamp(0, 1) if k == "image" else xp).to(x.dtype)}
        handles = []
        for m, k in mods.items():
            if k == "text":
                layer = embedding_layer(model.encoders[m])
                if layer is not None:
                    handles.append(layer.register_forward_hook(self._text_hook(m, deltas, grad)))
        was = getattr(model, "input_grad", False)
        model.input_grad = True  # frozen encoders keep their graph: the gradient must reach the inputs
        try:
            yield out
        finally:
            model.input_grad = was
            for h in handles:
                h.remove()

    def _text_hook(self, m: str, deltas: dict, grad: bool) -> Callable:
        def hook(module, args, output):
            if m not in deltas:
                deltas[m] = torch.zeros_like(output, dtype=torch.float32).requires_grad_(grad)
                deltas[f"{m}/radius"] = self.eps["text"] * float(output.detach().float().norm(dim=-1).mean())
            return output + deltas[m].to(output.dtype)

        return hook

    # ------------------------------------------------------------------ the steps
    def start(self, inputs: dict, gen: Optional[torch.Generator] = None) -> dict:
        """The first perturbations: zero (FGSM), or uniform in the ball (PGD, FreeLB) for image and
        audio; text ones start at zero (FreeLB's random start would need the embeddings' shape)."""
        deltas: dict = {}
        if self.method == "fgsm":
            return deltas
        for m, k in self.modalities(inputs).items():
            if k != "text":
                x = inputs[m]["x"]
                u = torch.rand(x.shape, generator=gen, device="cpu").to(x.device)
                deltas[m] = (2 * u - 1) * self.eps[k]
        return deltas

    def ascend(self, deltas: dict, grads: dict) -> dict:
        """One step up the loss, projected back into each ball."""
        out = dict(deltas)
        for m, k in self.kinds.items():
            if m not in deltas or grads.get(m) is None:
                continue
            g = grads[m].float()
            if k == "text":
                r = deltas[f"{m}/radius"]
                step = g / g.norm(dim=-1, keepdim=True).clamp(min=1e-12) * (self.alpha * r)
                out[m] = project_l2(deltas[m].detach() + step, r)
            else:
                e = self.eps[k]
                out[m] = (deltas[m].detach() + self.alpha * e * g.sign()).clamp(-e, e)
        return out

    def _loss_at(self, model, net, batch, deltas: dict, loss_fn: Callable) -> tuple[torch.Tensor, dict]:
        """The loss with the inputs perturbed by `deltas`, taken as fresh leaves that need a gradient
        (the text ones created by the pass). -> (loss, the leaves)."""
        leaves = {m: d.detach().requires_grad_(True) if torch.is_tensor(d) else d for m, d in deltas.items()}
        with self.applied(model, batch.inputs, leaves, grad=True) as inputs:
            return loss_fn((net or model)(inputs, batch.present, None, batch.targets)), leaves

    def perturb(self, model, batch, loss_fn: Callable, net=None) -> dict:
        """FGSM / PGD: the perturbations that raise `loss_fn(outputs)` (gradients with respect to the
        perturbations only). `net`: what to run (a DDP wrapper), default `model`."""
        deltas = self.start(batch.inputs)
        with torch.enable_grad():
            for _ in range(self.steps):
                loss, leaves = self._loss_at(model, net, batch, deltas, loss_fn)
                ts = {m: d for m, d in leaves.items() if torch.is_tensor(d) and d.requires_grad}
                if not ts:
                    return leaves
                gs = torch.autograd.grad(loss, list(ts.values()), allow_unused=True)
                deltas = self.ascend(leaves, dict(zip(ts, gs)))
        return {m: d.detach() if torch.is_tensor(d) else d for m, d in deltas.items()}

    def free_steps(self, model, batch, loss_fn: Callable, scale: float, net=None) -> list[torch.Tensor]:
        """FreeLB: `steps` ascent steps; each backpropagates scale / steps x its loss into the weights
        (gradients accumulate) and moves the perturbations up. -> the steps' losses (detached)."""
        deltas = self.start(batch.inputs)
        losses = []
        for _ in range(self.steps):
            loss, leaves = self._loss_at(model, net, batch, deltas, loss_fn)
            (scale / self.steps * loss).backward()
            losses.append(loss.detach())
            deltas = self.ascend(leaves, {m: d.grad for m, d in leaves.items() if torch.is_tensor(d) and
                                          d.requires_grad})
        return losses



def project_l2(delta: torch.Tensor, radius: float) -> torch.Tensor:
    """Each token's perturbation (last dimension) scaled into the L2 ball of `radius`."""
    n = delta.norm(dim=-1, keepdim=True)
    return delta * (radius / n.clamp(min=1e-12)).clamp(max=1.0)
