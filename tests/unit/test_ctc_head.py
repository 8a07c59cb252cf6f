"""The CTC transcriber's pieces: character ids, best-path decoding, the loss's alignment check, the
grid of tokens read as time steps, and the config's checks."""

import pytest
import torch

from mmfit.config import TargetConfig


def _proc(chars="abc"):
    from mmfit.data.targets import TargetProcessor

    p = TargetProcessor("t", TargetConfig(type="generation", decoder="ctc", source="audio", max_length=5))
    p.fit(list(chars), range(len(chars)))
    return p


def test_character_ids_round_trip_and_unseen_characters():
    from mmfit.data.targets import TargetProcessor

    p = _proc()
    assert p.chars == ["a", "b", "c"] and p.n_outputs == 5 and p.loss_kind == "ctc:audio"
    ids = p.token_ids(["cab", "abcabc", "axb", ""])
    assert ids.tolist() == [[4, 2, 3, 0, 0], [2, 3, 4, 2, 3], [2, 1, 3, 0, 0], [0, 0, 0, 0, 0]]  # cut at 5
    assert [p.reference(r) for r in ids] == ["cab", "abcab", "a\ufffdb", ""]
    back = TargetProcessor.from_state("t", p.cfg, p.state())
    assert back.chars == p.chars and back.token_ids(["cab"]).tolist() == ids[:1].tolist()


def test_best_path_merges_repeats_and_drops_blanks():
    from mmfit.models.heads import CTCHead

    head = CTCHead(8, 4, "audio", 8, None)
    paths = torch.tensor([[1, 1, 0, 2, 0, 2, 2, 3], [0, 0, 0, 0, 0, 0, 0, 0], [3, 3, 3, 0, 0, 0, 1, 1]])
    head.forward = lambda *a, **k: torch.nn.functional.one_hot(paths, 4).float().log()  # noqa: E731
    present = {"audio": torch.tensor([True, True, False])}
    out = head.generate(None, None, present)
    assert out.tolist() == [[1, 2, 2, 3], [0, 0, 0, 0], [0, 0, 0, 0]]  # the third row has no audio


def test_tokens_of_a_grid_become_time_steps_with_their_rows_side_by_side():
    from mmfit.models.heads import CTCHead

    head = CTCHead(4, 3, "audio", 2, (3, 5))  # 3 rows (frequency bands) x 5 columns (time)
    tokens = torch.arange(3 * 5 * 2, dtype=torch.float).reshape(1, 15, 2)  # row-major, as conv stems flatten
    steps = head.frames(tokens)
    assert steps.shape == (1, 5, 6)
    grid = tokens.reshape(3, 5, 2)
    assert steps[0, 1].tolist() == torch.cat([grid[0, 1], grid[1, 1], grid[2, 1]]).tolist()
    assert head(torch.zeros(1, 4), {"audio": type("O", (), {"tokens": tokens})}, None).shape == (1, 10, 3)
    with pytest.raises(ValueError, match="3 x 5 grid"):
        head.frames(tokens[:, :12])


def test_ctc_loss_learns_and_refuses_texts_longer_than_the_frames():
    from mmfit.models.heads import ctc_loss

    torch.manual_seed(0)
    logits = torch.zeros(2, 6, 4, requires_grad=True)
    target = torch.tensor([[1, 2, 0], [3, 3, 1]])
    opt = torch.optim.Adam([logits], lr=0.1)
    first = None
    for _ in range(30):
        loss = ctc_loss(torch.log_softmax(logits, -1), target)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first / 4
    with pytest.raises(ValueError, match="needs 4 frames"):  # "aab": 3 characters and a blank between the a's
        ctc_loss(torch.zeros(1, 3, 4).log_softmax(-1), torch.tensor([[1, 1, 2]]))


def test_ctc_config_checks(tmp_path):
    from conftest import tiny_config

    from mmfit.config import ConfigError, load_config

    def cfg_with(**target):
        cfg = tiny_config(tmp_path / "m.csv", tmp_path)
        cfg["data"]["columns"].pop("text")
        cfg["data"]["targets"] = {"text": {"type": "generation", "decoder": "ctc", **target}}
        return cfg

    assert load_config(cfg_with()).data.targets["text"].source == "audio"  # the only audio column
    with pytest.raises(ConfigError, match="audio column"):
        load_config(cfg_with(source="image"))
    with pytest.raises(ConfigError, match="beam"):
        load_config(cfg_with(beam=3))
    cfg = cfg_with()
    cfg["model"]["encoders"]["audio"] = {"name": "audio-stats"}
    with pytest.raises(ConfigError, match="audio-stats"):
        load_config(cfg)
    cfg = cfg_with()
    cfg["data"]["targets"]["text"].pop("decoder")
    cfg["data"]["targets"]["text"]["source"] = "audio"
    with pytest.raises(ConfigError, match="source"):
        load_config(cfg)
