"""One generic registry for every pluggable component kind (encoders, fusions), and what an encoder
declares about itself when it registers (`EncoderInfo`, in the manner of timm's `pretrained_cfg`).

Registration sits next to each definition (`@ENCODERS.register("minilm", info=...)` in
models/encoders/). The registry itself depends on none of that code: it knows the modules that
register the built-ins only by name and imports them on the first lookup, the way entry points
work. So config (this layer) and data (the next) can read an encoder's capabilities — is it
pretrained, which tokenizer, which audio features — without importing the models.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Callable, Generic, Optional, TypeVar

from mmfit.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class EncoderInfo:
    """Facts about an encoder that the rest of mmfit reads from the registry (declared once)."""

    kinds: tuple[str, ...]  # modality kinds it encodes: text, image, audio, tabular
    default_for: tuple[str, ...] = ()  # kinds it encodes when a config names no encoder (name: auto)
    pretrained: bool = False  # starts from trained weights (its own, small learning rate by default)
    # a Hugging Face transformers model: its architecture config is saved into the run and rebuilt from
    # there; supports keep_layers, embed_rank and trim_vocab (smaller students)
    hf_model: bool = False
    # text: the directory of the tokenizer it was trained with, given the encoder's `path` (None: mmfit
    # trains a WordPiece vocabulary on the training text)
    tokenizer: Optional[Callable[[Optional[str]], str]] = None
    audio_features: str = "logmel"  # what its audio input is: logmel, or the normalised waveform
    input_size: Optional[int] = None  # image side its weights were trained at (None: any)
    min_size: int = 1  # the smallest image side it can take
    # normalisation of [0, 1] pixels: (x - mean) / std per channel; None: read from its model directory
    image_mean: Optional[tuple[float, ...]] = None
    image_std: Optional[tuple[float, ...]] = None

    def encodes(self, kind: str) -> bool:
        """Whether it encodes `kind`; an image encoder encodes a video's frames too (models/encoders/frames.py)."""
        return kind in self.kinds or (kind == "video" and "image" in self.kinds)


class Registry(Generic[T]):
    def __init__(self, kind: str, plugins: tuple[str, ...] = ()):
        self.kind = kind
        self.plugins = plugins  # modules whose import registers the built-ins
        self._items: dict[str, T] = {}
        self._info: dict[str, object] = {}
        self._loaded = False

    def register(self, name: str, info: object = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            self._info[name] = info
            return obj

        return deco

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self.plugins:
                importlib.import_module(module)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def check(self, name: str, where: str = "") -> None:
        self._load()
        if name not in self._items:
            close = difflib.get_close_matches(name, list(self._items), n=1, cutoff=0.4)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"{where + ': ' if where else ''}unknown {self.kind} '{name}'{hint} "
                f"(available: {', '.join(sorted(self._items))})"
            )

    def get(self, name: str) -> T:
        self.check(name)
        return self._items[name]

    def info(self, name: str, where: str = ""):
        """What `name` declared when it registered."""
        self.check(name, where)
        return self._info[name]


ENCODERS: Registry = Registry("encoder", plugins=("mmfit.models.encoders",))
FUSIONS: Registry = Registry("fusion", plugins=("mmfit.models.fusion",))


def encoder_info(name: str, where: str = "") -> EncoderInfo:
    return ENCODERS.info(name, where)


def default_encoder(kind: str) -> str:
    """The encoder a modality kind gets when the config names none (`name: auto`)."""
    frames = "image" if kind == "video" else kind  # a video's frames go through the image encoder
    names = [n for n in ENCODERS.names() if frames in encoder_info(n).default_for]
    if len(names) != 1:
        raise ConfigError(f"no single default encoder for {kind} (candidates: {names}); name one in model.encoders")
    return names[0]
