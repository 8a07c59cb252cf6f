"""What an encoder declares when it registers (EncoderInfo) is read by config, data and models."""

from __future__ import annotations

import pytest

from mmfit.config import ConfigError, load_config
from mmfit.data.prepare import Preprocessor
from mmfit.models.encoders.scratch import build_scratch
from mmfit.registry import ENCODERS, EncoderInfo, encoder_info

if "test-wave" not in ENCODERS.names():  # a third-party encoder: registered by its own module, declared once
    ENCODERS.register("test-wave", info=EncoderInfo(kinds=("audio",), audio_features="waveform"))(build_scratch)


def _cfg(encoders: dict, columns=None) -> dict:
    return {"data": {"columns": columns or {"t": "text", "img": "image", "snd": "audio"},
                     "targets": {"y": "classification"}}, "model": {"encoders": encoders}}


def test_the_builtins_declare_themselves():
    assert encoder_info("minilm").kinds == ("text",) and encoder_info("minilm").hf_model
    assert encoder_info("efficientnet-lite0").pretrained and encoder_info("efficientnet-lite0").input_size == 224
    assert not encoder_info("scratch").pretrained and encoder_info("scratch").tokenizer is None
    assert encoder_info("hf").audio_features == "waveform"
    assert "minilm" in ENCODERS.names()


def test_config_checks_the_declared_modality_kinds_and_abilities():
    with pytest.raises(ConfigError, match=r"model.encoders.img.name: encoder 'minilm' encodes text, not image"):
        load_config(_cfg({"img": {"name": "minilm"}}))
    with pytest.raises(ConfigError, match=r"encoder 'efficientnet-lite0' encodes image, not audio"):
        load_config(_cfg({"audio": {"name": "efficientnet-lite0"}}))
    with pytest.raises(ConfigError, match="keep_layers, embed_rank and trim_vocab apply"):
        load_config(_cfg({"t": {"name": "scratch", "keep_layers": 2}}))
    with pytest.raises(ConfigError, match="unknown encoder 'minilmm'; did you mean 'minilm'"):
        load_config(_cfg({"t": {"name": "minilmm"}}))
    # a column named like a kind is checked by its own role
    load_config(_cfg({"text": {"name": "scratch"}}, columns={"text": "categorical"}))


def test_data_reads_the_declared_audio_features():
    pre = Preprocessor(load_config(_cfg({"snd": {"name": "test-wave"}})))
    assert pre.files["snd"].features == "waveform"
    assert Preprocessor(load_config(_cfg({}))).files["snd"].features == "logmel"
