"""The sharded, memory-mapped feature cache and the batch loader (data at scale)."""

import pickle

import numpy as np
import pytest
import torch

from conftest import tiny_config
from mmfit.config import load_config
from mmfit.data.batch import Loader
from mmfit.data.cache import FeatureCache, RowView, ShardedArray
from mmfit.data.prepare import prepare_training


def _prep(cfg, logs=None):
    return prepare_training(load_config(cfg), log=(logs.append if logs is not None else lambda *_: None))


def _shards(cache_dir, kind):
    return sorted((cache_dir / kind).rglob("*.npy"))


def test_sharded_array_reads_rows_across_shards_and_survives_pickle_and_release(tmp_path):
    cache = FeatureCache(tmp_path)
    blocks = [np.arange(i * 12, (i + 1) * 12, dtype=np.float32).reshape(4, 3) for i in range(3)]
    parts = []
    for i, b in enumerate(blocks):
        assert cache.save("t", f"k{i}", b, np.ones(4, bool), [])
        parts.append(cache.shard_path("t", f"k{i}"))
    parts[1] = blocks[1]  # mapped and in-memory shards mix
    arr = ShardedArray(parts)
    whole = np.concatenate(blocks)
    assert arr.shape == (12, 3) and arr.mapped
    idx = np.array([11, 0, 5, 4, 7, 3])
    assert np.array_equal(arr.take(idx), whole[idx])
    arr.release()  # dropping mapped pages changes nothing that is read afterwards
    assert np.array_equal(arr.take(idx), whole[idx])
    again = pickle.loads(pickle.dumps(arr))  # a loader worker reopens the files
    assert np.array_equal(again.take(np.arange(12)), whole)
    view = RowView(arr, np.array([2, 9, 4]))
    assert view.shape == (3, 3) and np.array_equal(view[torch.tensor([2, 0])], whole[[4, 2]])
    with pytest.raises(IndexError):
        arr.take([12])


def test_features_live_in_mapped_shards_and_equal_the_in_memory_ones(dataset, tmp_path, monkeypatch):
    cfg = tiny_config(dataset, tmp_path, data__shard_rows=16)
    _, splits, _ = _prep(cfg)
    x = splits["train"].inputs["image"]["x"]
    assert isinstance(x, RowView) and x.base.mapped and len(x.base.parts) == 4  # 60 rows / 16
    assert len(_shards(tmp_path / "cache", "image")) == 4 and len(_shards(tmp_path / "cache", "audio")) == 4
    cfg_mem = tiny_config(dataset, tmp_path, data__shard_rows=16, data__in_memory=True)
    _, mem, _ = _prep(cfg_mem)
    assert torch.is_tensor(mem["train"].inputs["image"]["x"])
    for s in ("train", "val", "test"):
        idx = torch.arange(len(splits[s]))
        a, b = splits[s].batch(idx), mem[s].batch(idx)
        for m in ("image", "audio"):
            assert a.inputs[m]["x"].dtype == torch.float32 and torch.equal(a.inputs[m]["x"], b.inputs[m]["x"])
        assert a.inputs["text"]["input_ids"].dtype == torch.int64  # cached as int32, batched as the model wants
        for k in ("input_ids", "attention_mask"):
            assert torch.equal(a.inputs["text"][k], b.inputs["text"][k])
    assert isinstance(splits["train"].inputs["text"]["input_ids"], RowView)  # token ids are sharded too
    tokens = sorted((tmp_path / "cache" / "tokens").rglob("*.npy"))
    assert len(tokens) == 4
    from mmfit.data.modalities.text import TextProcessor

    monkeypatch.setattr(TextProcessor, "encode", lambda *a: pytest.fail("tokenised again"))
    _prep(cfg)  # the tokenizer is fitted again, identically: its shards are found
    assert sorted((tmp_path / "cache" / "tokens").rglob("*.npy")) == tokens


def test_a_changed_file_rebuilds_only_its_shard_and_a_damaged_shard_is_rebuilt(dataset, tmp_path):
    cfg = tiny_config(dataset, tmp_path, data__shard_rows=16)
    _prep(cfg)
    before = set(_shards(tmp_path / "cache", "image"))
    img = dataset.parent / "img"
    (img / "20.png").write_bytes((img / "23.png").read_bytes())  # row 20: the second shard
    logs = []
    _prep(cfg, logs)
    assert any("decoded image column 'image': 16 files" in ln and "1 shard(s)" in ln for ln in logs), logs
    assert any(ln.startswith("cache hit: audio") for ln in logs)
    new = set(_shards(tmp_path / "cache", "image")) - before
    assert len(new) == 1
    damaged = new.pop()
    damaged.write_bytes(damaged.read_bytes()[:200])  # cut short: never trusted
    logs.clear()
    _, splits, _ = _prep(cfg, logs)
    assert any("decoded image column 'image': 16 files" in ln for ln in logs), logs
    assert splits["train"].batch(torch.arange(len(splits["train"]))).inputs["image"]["x"].shape[0] == len(splits["train"])


def test_loader_workers_give_the_same_batches_as_the_main_process(dataset, tmp_path):
    _, splits, _ = _prep(tiny_config(dataset, tmp_path, data__shard_rows=16))
    data = splits["train"]

    def epoch(workers):
        loader = Loader(data, 8, workers=workers)
        out = []
        for e in range(2):  # persistent workers serve a second epoch in a new order
            gen = torch.Generator().manual_seed(100 + e)
            out.append([(b.rows.clone(), b.inputs["image"]["x"].clone(), b.inputs["text"]["input_ids"].clone())
                        for b in loader.epoch(shuffle=True, generator=gen)])
        return out

    main, workers = epoch(0), epoch(2)
    assert len(main[0]) == -(-len(data) // 8)
    assert not torch.equal(main[0][0][0], main[1][0][0])  # the epochs differ in order
    for ea, eb in zip(main, workers):
        for a, b in zip(ea, eb):
            assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_unchanged_files_are_not_read_again_to_find_their_shards(dataset, tmp_path, monkeypatch):
    import os

    from mmfit.data import cache as cache_mod

    cfg = tiny_config(dataset, tmp_path, data__shard_rows=16)
    _prep(cfg)
    hashed = []
    real = cache_mod.content_hash
    monkeypatch.setattr(cache_mod, "content_hash", lambda data: hashed.append(len(data)) or real(data))
    logs = []
    _prep(cfg, logs)
    assert hashed == [] and sum(ln.startswith("cache hit") for ln in logs) == 2  # stat only, no file read
    img = dataset.parent / "img" / "7.png"
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same bytes
    logs.clear()
    _prep(cfg, logs)
    assert len(hashed) == 1 and sum(ln.startswith("cache hit") for ln in logs) == 2  # re-hashed, same shard


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_manifest_streams_in_chunks_with_the_same_result_as_one_piece(dataset, tmp_path, monkeypatch, fmt):
    import pandas as pd

    from mmfit.data import manifest as manifest_mod

    df = pd.read_csv(dataset, dtype=str, keep_default_na=False)
    path = dataset.parent / f"m.{fmt}"
    if fmt == "jsonl":
        df.to_json(path, orient="records", lines=True)
    elif fmt == "parquet":
        df.to_parquet(path)
    else:
        path = dataset
    chunks = list(manifest_mod.manifest_chunks(None, path, 16))
    assert [len(c) for c in chunks] == [16, 16, 16, 12]
    assert pd.concat(chunks, ignore_index=True).astype(str).equals(manifest_mod.read_manifest(path).astype(str))
    whole = _prep(tiny_config(path, tmp_path / "a", data__shard_rows=4096))
    monkeypatch.setattr(manifest_mod, "read_manifest", lambda *a: pytest.fail("read the whole manifest"))
    streamed = _prep(tiny_config(path, tmp_path / "b", data__shard_rows=16))
    for s in ("train", "val", "test"):
        a, b = whole[1][s], streamed[1][s]
        assert torch.equal(a.rows, b.rows) and torch.equal(a.targets["label"], b.targets["label"])
        ba, bb = a.batch(torch.arange(len(a))), b.batch(torch.arange(len(b)))
        for m in ba.inputs:
            for k in ba.inputs[m]:
                assert torch.equal(ba.inputs[m][k], bb.inputs[m][k]), (s, m, k)


def test_a_bad_cell_in_a_later_chunk_is_named_by_its_manifest_row(dataset, tmp_path):
    import pandas as pd

    from mmfit.data.errors import DataError

    df = pd.read_csv(dataset, dtype=str, keep_default_na=False)
    df.loc[41, "x1"] = "abc"
    df.loc[50, "image"] = "img/missing.png"
    df.to_csv(dataset, index=False)
    with pytest.raises(DataError) as e:
        _prep(tiny_config(dataset, tmp_path, data__shard_rows=16))
    assert sorted((x.row, x.column) for x in e.value.errors) == [(41, "x1"), (50, "image")]
    pre, splits, errors = _prep(tiny_config(dataset, tmp_path, data__shard_rows=16, data__on_error="skip"))
    kept = torch.cat([splits[s].rows for s in splits]).tolist()
    assert 41 not in kept and 50 not in kept and len(kept) == 58
