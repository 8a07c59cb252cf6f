"""mmfit preprocess: every file decoded into the feature cache ahead of training."""

from __future__ import annotations

from conftest import make_dataset, tiny_config
from mmfit import api


def test_preprocess_fills_the_cache_so_training_decodes_nothing(tmp_path):
    from rich.console import Console

    tmp = tmp_path
    manifest = make_dataset(tmp / "data")
    cfg = tiny_config(manifest, tmp, train__epochs=1)
    cfg["data"]["cache_dir"] = str(tmp / "pre-cache")
    cfg["data"]["shard_rows"] = 16
    out = api.preprocess(cfg, console=Console(quiet=True), workers=2)  # 4 shards per column over 2 processes
    assert len(list((tmp / "pre-cache" / "image").rglob("*.npy"))) == 4
    assert out["train"] + out["val"] + out["test"] == 60 and out["skipped"] == 0
    console = Console(quiet=False, file=open(tmp / "log.txt", "w"), width=200)
    api.train(cfg, run_dir=tmp / "after-preprocess", console=console)
    console.file.close()
    text = (tmp / "log.txt").read_text()
    assert text.count("cache hit") == 2 and "decoded image" not in text, text[:500]
