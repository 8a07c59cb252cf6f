"""mmfit: multimodal (image, text, audio, tabular) training from one manifest, offline.

Importing it changes nothing in the process (no environment variables, no thread counts): every
pretrained model is read from a local directory or a wheel with `local_files_only=True` where it is
loaded, so a notebook's own downloads keep working. The `mmfit` command, a process of its own, also
sets HF_HUB_OFFLINE."""

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
