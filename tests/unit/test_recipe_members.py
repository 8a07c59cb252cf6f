"""The recipe's members after the planned ones: fine-tuned members go through a portfolio of ways
to fine-tune before repeating them with other seeds; a kind the selection gives no weight gets no more.
And the frozen image encoders' one pass kept within the time limit (smaller images, then fewer frames)."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from conftest import tiny_config
from mmfit.config import encoder_config, load_config
from mmfit.recipe import budget, members, orchestrate


def _base(tmp_path: Path):
    cfg = load_config(tiny_config(tmp_path / "m.csv", tmp_path))
    cfg.model.encoders["text"] = type(encoder_config(cfg, "text"))(name="minilm")
    cfg.model.encoders["image"] = type(encoder_config(cfg, "image"))(name="efficientnet-lite0")
    return cfg


def test_finetune_members_go_through_the_portfolio_then_repeat_it_with_other_seeds(tmp_path):
    plans = members.member_configs(_base(tmp_path))
    ft = plans["finetune"]
    text = encoder_config(ft, "text")
    assert text.finetune.strategy == "partial" and text.finetune.layers >= 6  # every block, no embeddings
    assert encoder_config(ft, "image").finetune.strategy == "frozen"
    made = {k: members.extra_member("finetune", ft, k, True) for k in range(2, 8)}
    (c2, p2), (c3, p3), (c4, p4) = made[2], made[3], made[4]
    assert not p2 and c2.train.lr == 1e-3 and encoder_config(c2, "text").lr == 5e-5  # fresh heads
    assert p3 and encoder_config(c3, "text").finetune.layers == 3 and encoder_config(c3, "text").lr == 1e-4
    assert p4 and encoder_config(c4, "text").lr == text.lr and c4.train.lr == ft.train.lr  # the first way again,
    assert c4.train.seed == ft.train.seed + 1 and made[7][0].train.seed == ft.train.seed + 2  # another seed
    assert {c.train.seed for c, _ in (made[2], made[3])} == {ft.train.seed}
    for c, _ in made.values():  # the frozen image encoder stays frozen; the plan itself is untouched
        assert encoder_config(c, "image").finetune.strategy == "frozen"
    assert encoder_config(ft, "text").lr == 3e-5 and ft.train.lr == 1e-4
    sc, from_probe = members.extra_member("scratch", plans["scratch"], 3, False)
    assert sc.train.seed == plans["scratch"].train.seed + 2 and not from_probe


def test_no_more_members_of_a_kind_the_selection_does_not_weigh(tmp_path, monkeypatch):
    team = orchestrate.Members(None, None, [], type("R", (), {"time_limit": 600.0, "refit": False})(), 0.0,
                          Console(quiet=True))
    weights = {"label": {("probe", "fused"): 0.5, ("finetune-2", "aux:text"): 0.5, ("scratch", "fused"): 0.0}}
    monkeypatch.setattr(team, "choose", lambda: ({}, {}, weights, {}))
    assert team._weighted("finetune") and team._weighted("probe")
    assert not team._weighted("scratch")
    trained = []
    team.plans = {n: c for n, c in members.member_configs(_base(tmp_path)).items()}
    team.runs = {n: None for n in team.plans}
    team.took = {n: 1.0 for n in team.plans}
    team.from_probe = {"finetune"}
    team.t0 = time.time()
    monkeypatch.setattr(team, "_train", lambda name, cfg, share: trained.append(name))
    team.extras()
    assert trained == [f"finetune-{k}" for k in range(2, 8)] and "finetune-2" not in team.from_probe
    assert {"finetune-3", "finetune-4"} <= team.from_probe


def _per_image(name: str, side: int) -> float:
    """A stand-in for timing the encoder: 1 ms per image at 224 px, with the side squared."""
    return 1e-3 * (side / 224) ** 2


def test_the_frozen_pass_is_kept_within_its_share_of_the_time_limit(tmp_path):
    said = []
    cfg = _base(tmp_path)
    cfg.recipe.time_limit, cfg.data.image.size = 600.0, 224
    budget.fit_frozen_passes(cfg, lambda: 50_000, said.append, _per_image)  # 50 s at 224 px: well within 200 s
    assert cfg.data.image.size == 224 and not said
    cfg.recipe.time_limit = 10.0  # a pass of 50 s over a third of 10 s, but under a minute: not worth smaller images
    budget.fit_frozen_passes(cfg, lambda: 50_000, said.append, _per_image)
    assert cfg.data.image.size == 224 and not said
    cfg.recipe.time_limit = 600.0
    budget.fit_frozen_passes(cfg, lambda: 1_000_000, said.append, _per_image)  # 1,000 s: made smaller until it fits
    side = cfg.data.image.size
    assert 32 <= side < 224 and side % 8 == 0 and 1_000_000 * _per_image("", side) <= 200
    assert 1_000_000 * _per_image("", side + 8) > 200 * 0.8  # not made smaller than it needs
    assert "data.image.size 224 -> " in said[0] and "recipe.fit_inputs=false" in said[0] and len(said) == 1
    for limit, fit in ((None, True), (600.0, False)):  # no time limit, or switched off: the sizes stay
        c = _base(tmp_path)
        c.recipe.time_limit, c.recipe.fit_inputs, c.data.image.size = limit, fit, 224
        budget.fit_frozen_passes(c, lambda: 10_000_000, said.append, _per_image)
        assert c.data.image.size == 224 and len(said) == 1


def test_a_video_too_long_for_the_time_limit_at_the_smallest_side_takes_fewer_frames(tmp_path):
    said = []
    raw = tiny_config(tmp_path / "m.csv", tmp_path, data__columns={"clip": "video", "text": "text"},
                      data__image={"size": 224}, data__video={"frames": 8})
    raw["model"]["encoders"] = {"clip": {"name": "efficientnet-lite0"}, "text": {"name": "minilm"}}
    cfg = load_config(raw)
    cfg.recipe.time_limit = 60.0
    rows = 1_000_000  # at 32 px: 20 s a frame over every row, 163 s a clip of 8 frames; 60 s allowed (MIN_PASS)
    budget.fit_frozen_passes(cfg, lambda: rows, said.append, _per_image)
    assert cfg.data.image.size == 32 and 1 <= cfg.data.video.frames < 8
    frame = rows * _per_image("", 32)
    assert cfg.data.video.frames * frame <= 60.0 < (cfg.data.video.frames + 1) * frame
    assert "data.video.frames 8 -> " in said[0]
    assert len(said) == 1  # it fits: no warning that it still does not
    cfg.data.video.frames, cfg.data.image.size = 8, 224
    budget.fit_frozen_passes(cfg, lambda: rows * 100, said.append, _per_image)  # one frame is still too many
    assert cfg.data.video.frames == 1 and "even so" in said[-1]


def test_a_neighbours_member_reads_the_probes_frozen_outputs_and_kinds_can_be_left_out(tmp_path):
    base = _base(tmp_path)
    plans = members.member_configs(base)
    assert list(plans)[:5] == ["convex", "trees", "probe", "neighbours", "finetune"]  # the data has a table
    cv = plans["convex"]  # the linear probe on the same frozen outputs, over train + val by cross-validation
    assert (cv.model.head, cv.model.crossfit.rows, cv.model.crossfit.choose_on) == ("convex", "labelled", "folds")
    assert plans["trees"].model.head == "trees" and encoder_config(plans["trees"], "tabular").name == "table-stats"
    assert members.member_configs(base, groups_apart=True)["convex"].model.crossfit.choose_on == "val"
    assert all(encoder_config(cv, m).finetune.strategy == "frozen" for m in ("text", "image"))
    nb = plans["neighbours"]
    assert nb.model.head == "neighbours" and plans["probe"].model.head == "linear"
    assert all(encoder_config(nb, m).finetune.strategy == "frozen" for m in ("text", "image"))
    assert encoder_config(nb, "audio").name == "audio-stats"  # what the probe reads, no weights
    base.recipe.exclude = ["convex", "trees", "neighbours", "scratch"]
    assert list(members.member_configs(base)) == ["probe", "finetune"]


def test_from_scratch_members_cut_images_and_log_mels_into_at_most_64_tokens(tmp_path):
    import torch

    from mmfit.data.modalities.audio import AudioProcessor
    from mmfit.models.encoders.scratch import ConvPatchEmbed

    base = _base(tmp_path)  # the defaults a user gets: 224 px for the packaged image encoder, 2 s of 16 kHz audio
    base.data.image.size = 224
    base.data.audio = type(base.data.audio)()
    sc = members.member_configs(base)["scratch"]
    image, audio = encoder_config(sc, "image"), encoder_config(sc, "audio")
    shapes = {"image": (3, image.input_size, image.input_size),
              "audio": (1, *AudioProcessor("audio", sc.data.audio).feature_shape())}  # the log-mel the data gives
    for m, ec in (("image", image), ("audio", audio)):
        tokens = ConvPatchEmbed(shapes[m][0], 8, ec.patch)(torch.zeros(1, *shapes[m])).shape[1]
        assert 16 <= tokens <= members.SCRATCH_TOKENS, (m, ec.patch, tokens)
    assert (image.input_size, image.patch, audio.patch) == (56, 8, 16)  # 49 and 52 tokens, not 196 and 208
    assert [members.scratch_patch(*hw) for hw in ((28, 28), (32, 32), (40, 101), (64, 64), (128, 1001))] == [4, 4, 16, 8, 32]
