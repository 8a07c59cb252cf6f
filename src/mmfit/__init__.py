"""mmfit: multimodal (image, text, audio, tabular) training from one manifest, offline."""

import os

# Offline by design: nothing may reach a model hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from mmfit.version import __version__  # noqa: E402,F401

from mmfit.api import demo, evaluate, fit, init, predict, pretrain, train, validate  # noqa: E402
from mmfit.config import Config, ConfigError, load_config  # noqa: E402
from mmfit.data.errors import DataError  # noqa: E402


def __getattr__(name):
    if name == "Predictor":  # lazy: keeps `import mmfit` light
        from mmfit.deploy.predictor import Predictor

        return Predictor
    raise AttributeError(name)


__all__ = ["Config", "ConfigError", "DataError", "Predictor", "demo", "evaluate", "fit", "init", "load_config",
           "predict", "pretrain", "train", "validate"]
