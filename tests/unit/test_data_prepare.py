"""Manifest -> split tensors: formats, splits, missing values, cache, and every bad input."""

import csv
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_dataset, tiny_config
from mmfit.config import ConfigError, load_config
from mmfit.data.errors import DataError
from mmfit.data.manifest import read_manifest
from mmfit.data.prepare import prepare_training
from mmfit.run.store import Run


def quiet(*a, **k):
    pass


def _prep(cfg_dict, df=None, run_dir=None):
    pre, splits, errors = prepare_training(load_config(cfg_dict), df, log=quiet)
    if run_dir is not None and errors.errors:  # as training does: the run writes what was skipped
        Run(run_dir).write_skipped(errors)
    return pre, splits, errors


def _edit(manifest, row, **values):
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    for k, v in values.items():
        df.loc[row, k] = v
    df.to_csv(manifest, index=False)


def test_splits_are_stratified_seeded_and_complete(dataset, tmp_path):
    pre, splits, errors = _prep(tiny_config(dataset, tmp_path))
    sizes = {k: len(v) for k, v in splits.items()}
    assert sum(sizes.values()) == 60 and sizes["test"] == 12 and sizes["val"] == 12
    rows = np.concatenate([splits[s].rows.numpy() for s in splits])
    assert sorted(rows.tolist()) == list(range(60))  # nothing dropped, nothing doubled
    for s in ("val", "test"):  # stratified: 4 of each class
        assert np.bincount(splits[s].targets["label"].numpy()).tolist() == [4, 4, 4]
    _, again, _ = _prep(tiny_config(dataset, tmp_path))
    assert again["test"].rows.tolist() == splits["test"].rows.tolist()
    _, other, _ = _prep(tiny_config(dataset, tmp_path, data__split={"seed": 1, "val": 0.2, "test": 0.2}))
    assert other["test"].rows.tolist() != splits["test"].rows.tolist()


def test_refit_split_trains_on_val_with_the_preprocessing_fitted_on_train(tmp_path):
    m = make_dataset(tmp_path / "d", n=60)
    df = pd.read_csv(m, dtype=str, keep_default_na=False)
    df["x1"] = [str(float(i)) for i in range(60)]  # a number whose statistics the val rows would move
    df.to_csv(m, index=False)
    pre, splits, _ = _prep(tiny_config(m, tmp_path))
    pre_r, refit, _ = _prep(tiny_config(m, tmp_path, data__split={"val": 0.2, "test": 0.2, "seed": 0, "refit": True}))
    assert len(refit["val"]) == 0 and refit["test"].rows.tolist() == splits["test"].rows.tolist()
    assert sorted(refit["train"].rows.tolist()) == sorted(splits["train"].rows.tolist() + splits["val"].rows.tolist())
    # the numbers are standardised as without refit: one Batch serves members with and without it
    assert pre_r.tabular.stats == pre.tabular.stats
    assert torch.equal(refit["test"].inputs["tabular"]["values"], splits["test"].inputs["tabular"]["values"])
    with pytest.raises(ValueError, match="train.selection: last"):
        from mmfit.training.loop import train

        train(load_config(tiny_config(m, tmp_path, data__split={"val": 0.2, "test": 0.2, "seed": 0, "refit": True})), run_dir=tmp_path / "r")


def test_split_column_and_group_split(tmp_path):
    m = make_dataset(tmp_path / "d", with_split=True)
    _, splits, _ = _prep(tiny_config(m, tmp_path))
    df = pd.read_csv(m)
    for s in ("train", "val", "test"):
        assert set(splits[s].rows.tolist()) == set(np.flatnonzero(df["split"] == s))
    cfg = tiny_config(m, tmp_path, data__split={"column": "nosuch", "group_column": "group", "val": 0.3, "test": 0.3})
    _, splits, _ = _prep(cfg)
    groups = df["group"].to_numpy()
    seen = [set(groups[splits[s].rows.numpy()]) for s in ("train", "val", "test")]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])


@pytest.mark.parametrize("suffix", ["jsonl", "parquet", "xlsx"])
def test_jsonl_parquet_excel_and_dataframe_manifests(dataset, tmp_path, suffix):
    df = pd.read_csv(dataset, dtype=str, keep_default_na=False)
    path = dataset.with_suffix(f".{suffix}")
    if suffix == "xlsx":  # as a spreadsheet holds it: numbers as numbers, empty cells empty, a date column
        sheet = df.copy()
        sheet["x1"], sheet["id"] = sheet["x1"].astype(float), sheet["id"].astype(int)
        sheet["color"] = sheet["color"].replace("", None)
        sheet["seen"] = pd.date_range("2024-01-30", periods=len(df), freq="D")
        sheet.to_excel(path, index=False)
        back = read_manifest(path)
        assert back["id"].tolist()[:3] == ["0", "1", "2"] and back["color"].tolist() == df["color"].tolist()
        assert np.allclose(back["x1"].astype(float), df["x1"].astype(float))
        assert back["seen"].tolist()[:2] == ["2024-01-30", "2024-01-31"]
    else:
        df.to_json(path, orient="records", lines=True) if suffix == "jsonl" else df.to_parquet(path)
    assert len(read_manifest(path)) == 60
    _, splits, _ = _prep(tiny_config(path, tmp_path))
    assert sum(len(s) for s in splits.values()) == 60
    _, splits, _ = _prep(tiny_config(None, tmp_path, data__root=str(dataset.parent)), df=df)
    assert sum(len(s) for s in splits.values()) == 60


def test_a_csv_as_spreadsheets_in_other_locales_write_it(dataset, tmp_path):
    """Excel's exports: ';' with decimal commas and a byte-order mark, Windows-1252 text, backslashed
    paths from Windows. Read as written, trained on unchanged; a malformed line names file and line."""
    df = pd.read_csv(dataset, dtype=str, keep_default_na=False)
    local = df.copy()
    local["text"] = local["text"].str.replace("a", "\u00e9", n=1)  # é: in Windows-1252, not ASCII
    local["x1"] = local["x1"].str.replace(".", ",", regex=False)
    local["image"] = local["image"].str.replace("/", "\\")
    semi = dataset.with_name("semi.csv")
    local.to_csv(semi, sep=";", index=False, encoding="utf-8-sig")
    back = read_manifest(semi)
    assert list(back.columns) == list(df.columns)  # no BOM glued to the first name
    assert back["x1"].tolist() == df["x1"].tolist()  # 3,5 read as 3.5
    assert back.attrs["read_as"] == "fields split by ';', decimal commas read as numbers (3,5 = 3.5)"
    ansi = dataset.with_name("ansi.csv")
    local.assign(x1=df["x1"]).to_csv(ansi, index=False, encoding="cp1252")
    back = read_manifest(ansi)
    assert back["text"].tolist() == local["text"].tolist() and "\u00e9" in back["text"].iloc[0] + "".join(back["text"])
    assert back.attrs["read_as"] == "Windows-1252 text (not UTF-8)"
    wide = dataset.with_name("unicode.txt")  # Excel's "Unicode text": UTF-16, tabs
    local.assign(x1=df["x1"]).to_csv(wide, sep="\t", index=False, encoding="utf-16")
    back = read_manifest(wide)
    assert back.values.tolist() == local.assign(x1=df["x1"]).values.tolist()
    assert back.attrs["read_as"] == "UTF-16 text (not UTF-8), fields split by tab"
    plain = pd.read_csv(dataset, dtype=str, keep_default_na=False)
    assert "read_as" not in read_manifest(dataset).attrs and read_manifest(dataset).equals(plain)
    for path in (semi, ansi):  # trained on as they are, read in chunks as training reads them
        pre, splits, errors = _prep(tiny_config(path, tmp_path, data__shard_rows=16))
        assert sum(len(s) for s in splits.values()) == 60 and not errors.errors
        assert np.isclose(pre.tabular.stats["x1"]["mean"], df["x1"].astype(float)[splits["train"].rows.numpy()].mean())
    bad = dataset.with_name("bad.csv")
    bad.write_text(dataset.read_text() + ",".join(["x"] * (len(df.columns) + 3)) + "\n")  # one field too many
    with pytest.raises(ValueError, match=r"bad.csv.*must be quoted"):
        read_manifest(bad)


def test_windows_paths_and_urls_get_their_own_answer(dataset, tmp_path):
    from mmfit.data.infer import infer_roles
    from mmfit.data.manifest import PathResolver

    resolver = PathResolver(dataset.parent)
    path, why = resolver.resolve("img\\3.png")
    assert why is None and path == (dataset.parent / "img" / "3.png").resolve()
    _, why = resolver.resolve("C:\\Users\\me\\img\\3.png")
    assert "Windows drive path" in why and "--root" in why
    df = pd.read_csv(dataset, dtype=str, keep_default_na=False)
    urls = df.assign(image="https://example.org/" + df["image"])
    with pytest.raises(ConfigError, match=r"column 'image' holds URLs.*offline.*--column image=ignore"):
        infer_roles(urls, ["label"], dataset.parent)
    drives = df.assign(image="D:\\data\\" + df["image"].str.replace("/", "\\"))
    with pytest.raises(ConfigError, match=r"column 'image' holds Windows drive paths.*--root"):
        infer_roles(drives, ["label"], dataset.parent)


def test_missing_values_mark_the_modality_absent_not_zero(dataset, tmp_path):
    _edit(dataset, 5, image="", text="", x1="")
    _edit(dataset, 6, audio="")
    pre, splits, _ = _prep(tiny_config(dataset, tmp_path, data__split={"column": "x", "val": 0.0, "test": 0.0}))
    tr = splits["train"]
    pos = {r: i for i, r in enumerate(tr.rows.tolist())}
    assert not tr.present["image"][pos[5]] and not tr.present["text"][pos[5]]
    assert tr.present["audio"][pos[5]] and tr.present["tabular"][pos[5]]  # color still there
    assert not tr.inputs["tabular"]["feature_mask"][pos[5], 0]
    assert not tr.present["audio"][pos[6]]
    assert tr.present["image"].sum() == 59


def test_numbers_are_standardised_with_training_statistics(dataset, tmp_path):
    pre, splits, _ = _prep(tiny_config(dataset, tmp_path))
    x = splits["train"].inputs["tabular"]["values"][:, 0]
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std(unbiased=False)) - 1) < 1e-3
    assert pre.tabular.stats["x1"]["std"] > 0


def test_second_run_decodes_nothing(dataset, tmp_path):
    logs = []
    prepare_training(load_config(tiny_config(dataset, tmp_path)), log=logs.append)
    assert any("decoded image" in line for line in logs)
    logs.clear()
    prepare_training(load_config(tiny_config(dataset, tmp_path)), log=logs.append)
    assert sum("cache hit" in line for line in logs) == 2 and not any(line.startswith("decoded") for line in logs)
    (dataset.parent / "img" / "3.png").write_bytes((dataset.parent / "img" / "4.png").read_bytes())
    logs.clear()
    prepare_training(load_config(tiny_config(dataset, tmp_path)), log=logs.append)
    assert any("decoded image" in line for line in logs)  # content changed -> rebuilt


# ------------------------------------------------------------------ bad input, one test each


def _bad(dataset, tmp_path, match, **cfg_extra):
    with pytest.raises(DataError, match=match) as e:
        _prep(tiny_config(dataset, tmp_path, **cfg_extra))
    return e.value


def _skipped(dataset, tmp_path, **cfg_extra):
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    _, splits, errors = _prep(tiny_config(dataset, tmp_path, data__on_error="skip", **cfg_extra), run_dir=run)
    rows = list(csv.DictReader(open(run / "skipped.csv")))
    return splits, rows


def test_corrupt_image(dataset, tmp_path):
    (dataset.parent / "img" / "7.png").write_bytes(b"\x89PNG garbage")
    err = _bad(dataset, tmp_path, r"row 7, column 'image', file 'img/7.png': cannot decode image")
    assert len(err.errors) == 1
    splits, rows = _skipped(dataset, tmp_path)
    assert [r["row"] for r in rows] == ["7"] and "cannot decode" in rows[0]["reason"]
    assert sum(len(s) for s in splits.values()) == 59


def test_unreadable_audio(dataset, tmp_path):
    (dataset.parent / "aud" / "9.wav").write_bytes(b"RIFF....WAVEfmt nonsense")
    _bad(dataset, tmp_path, r"row 9, column 'audio', file 'aud/9.wav': cannot decode audio")
    _, rows = _skipped(dataset, tmp_path)
    assert [r["row"] for r in rows] == ["9"]


def test_missing_file(dataset, tmp_path):
    os.remove(dataset.parent / "img" / "11.png")
    _bad(dataset, tmp_path, r"row 11, column 'image', file 'img/11.png': file not found")
    _, rows = _skipped(dataset, tmp_path)
    assert rows[0]["file"] == "img/11.png"


def test_path_outside_the_data_root(dataset, tmp_path):
    (tmp_path / "secret.png").write_bytes((dataset.parent / "img" / "0.png").read_bytes())
    _edit(dataset, 4, image="../../secret.png")
    _bad(dataset, tmp_path, r"row 4, column 'image', file '../../secret.png': path .* is outside the data root")
    _edit(dataset, 4, image=str(tmp_path / "secret.png"))
    _bad(dataset, tmp_path, r"row 4, column 'image'.*outside the data root")


def test_empty_text_in_a_required_column(dataset, tmp_path):
    _edit(dataset, 2, text="   ")
    cols = tiny_config(dataset, tmp_path)["data"]["columns"]
    cols["text"] = {"role": "text", "required": True}
    _bad(dataset, tmp_path, r"row 2, column 'text': empty text", data__columns=cols)
    _, rows = _skipped(dataset, tmp_path, data__columns=cols)
    assert rows[0]["reason"] == "empty text"


@pytest.mark.parametrize("value,reason", [("NaN", "not a finite number"), ("abc", "'abc' is not a number"),
                                          ("inf", "not a finite number")])
def test_nan_or_non_numeric_value_in_numeric_column(dataset, tmp_path, value, reason):
    _edit(dataset, 8, x1=value)
    _bad(dataset, tmp_path, rf"row 8, column 'x1': .*{reason}")
    splits, rows = _skipped(dataset, tmp_path)
    assert rows[0]["column"] == "x1" and 8 not in np.concatenate([s.rows.numpy() for s in splits.values()])


def test_non_numeric_regression_target(dataset, tmp_path):
    _edit(dataset, 10, score="high")
    _bad(dataset, tmp_path, r"row 10, column 'score': 'high' is not a number")


def test_unknown_column_name_in_config(dataset, tmp_path):
    cfg = tiny_config(dataset, tmp_path)
    cfg["data"]["columns"]["txt"] = cfg["data"]["columns"].pop("text")
    with pytest.raises(ConfigError, match=r"data.columns.txt: column 'txt' is not in the manifest; did you mean 'text'"):
        _prep(cfg)
    cfg = tiny_config(dataset, tmp_path)
    cfg["data"]["targets"] = {"lable": "classification"}
    with pytest.raises(ConfigError, match=r"data.targets.lable.*did you mean 'label'"):
        _prep(cfg)


def test_class_with_no_rows_in_the_training_split(tmp_path):
    m = make_dataset(tmp_path / "d", with_split=True)
    df = pd.read_csv(m, dtype=str, keep_default_na=False)
    df.loc[df["split"] == "test", "label"] = "d"  # 'd' only in test
    df.to_csv(m, index=False)
    err = _bad(m, tmp_path, r"column 'label': label 'd' has no rows in the training split")
    assert all(e.column == "label" for e in err.errors)
    cfg = tiny_config(m, tmp_path)
    cfg["data"]["targets"]["label"] = {"type": "classification", "classes": ["a", "b", "c", "d", "e"]}
    with pytest.raises(ConfigError, match=r"class\(es\) \['d', 'e'\] have no rows in the training split"):
        _prep(cfg)


def test_bad_split_value_and_row_without_inputs(tmp_path):
    m = make_dataset(tmp_path / "d", with_split=True)
    _edit(m, 3, split="tset")
    _bad(m, tmp_path, r"row 3, column 'split': split value 'tset'")
    m2 = make_dataset(tmp_path / "e")
    _edit(m2, 1, image="", audio="", text="", x1="", color="")
    _bad(m2, tmp_path, r"row 1, column '\*': row has no input value")


def test_errors_are_all_reported_at_once(dataset, tmp_path):
    (dataset.parent / "img" / "7.png").write_bytes(b"junk")
    _edit(dataset, 8, x1="abc")
    os.remove(dataset.parent / "aud" / "13.wav")
    err = _bad(dataset, tmp_path, r"3 bad value")
    assert [e.row for e in err.errors] == [7, 8, 13]
    splits, rows = _skipped(dataset, tmp_path)
    assert sum(len(s) for s in splits.values()) == 57 and len(rows) == 3


def test_categorical_only_tabular_and_unseen_category(dataset, tmp_path):
    cfg = tiny_config(dataset, tmp_path)
    cfg["data"]["columns"] = {"text": "text", "color": "categorical"}
    pre, splits, _ = _prep(cfg)
    tr = splits["train"]
    assert tr.inputs["tabular"]["values"].shape[1] == 0
    assert pre.tabular.vocab["color"] == ["<unk>", "b", "g", "r"]
    blank = (tr.inputs["tabular"]["categories"][:, 0] == 0)
    assert (tr.present["tabular"] == ~blank).all()  # an empty category cell is absent, not a category
    df = pd.read_csv(dataset, dtype=str, keep_default_na=False).head(2)
    df.loc[0, "color"] = "purple"
    data, _ = pre.transform(df, dataset.parent)
    assert data.inputs["tabular"]["categories"][0, 0] == 0 and data.present["tabular"][0]  # unseen -> <unk>


def test_on_error_missing_keeps_the_row_with_the_modality_absent(dataset, tmp_path):
    (dataset.parent / "img" / "7.png").write_bytes(b"\x89PNG garbage")
    _edit(dataset, 9, audio="aud/nowhere.wav")
    _edit(dataset, 11, image="img/nowhere.png", audio="", text="", x1="", color="")  # nothing else to read
    _edit(dataset, 13, x1="abc")  # not a file: this row is still skipped
    run = tmp_path / "run"
    run.mkdir()
    _, splits, errors = _prep(tiny_config(dataset, tmp_path, data__on_error="missing"), run_dir=run)
    assert sum(len(s) for s in splits.values()) == 58  # rows 11 and 13 left out, 7 and 9 kept
    for s in splits.values():
        for pos, row in enumerate(s.rows.tolist()):
            if row == 7:
                assert not s.present["image"][pos] and s.present["audio"][pos]
            if row == 9:
                assert not s.present["audio"][pos] and s.present["image"][pos]
    lines = {(r["row"], r["column"]): r["action"] for r in csv.DictReader(open(run / "skipped.csv"))}
    assert lines[("7", "image")] == lines[("9", "audio")] == "modality absent"
    assert lines[("11", "image")] == lines[("11", "*")] == lines[("13", "x1")] == "row skipped"
    summary = json.loads((run / "skipped.json").read_text())
    assert summary["rows"] == 2 and summary["cells_absent"] == 2


def test_new_data_without_an_input_column_treats_it_as_absent(dataset, tmp_path):
    pre, _, _ = _prep(tiny_config(dataset, tmp_path))
    df = pd.read_csv(dataset, dtype=str, keep_default_na=False).head(5).drop(columns=["audio"])
    with pytest.warns(UserWarning, match="'audio' not in the data: treated as absent in every row"):
        data, errors = pre.transform(df, dataset.parent, log=quiet)
    assert len(data) == 5 and not data.present["audio"].any() and data.present["image"].all()
    with pytest.warns(UserWarning, match=r"'audio' \(did you mean 'audio_file'\?\)"):
        pre.transform(df.rename(columns={"text": "txt"}).assign(audio_file="x"), dataset.parent, log=quiet)
    with pytest.raises(ConfigError, match="not in the manifest"):  # no input column at all
        pre.transform(df[["label"]], dataset.parent, log=quiet)


def test_audio_is_decoded_only_as_far_as_the_model_reads(tmp_path):
    import io

    import soundfile as sf

    from mmfit.config import AudioConfig
    from mmfit.data.modalities.audio import AudioProcessor

    rng = np.random.default_rng(0)
    wave = rng.normal(0, 0.1, (48_000 * 30, 2)).astype(np.float32)  # 30 s stereo at 48 kHz
    buf = io.BytesIO()
    sf.write(buf, wave, 48_000, format="WAV")
    proc = AudioProcessor("a", AudioConfig(sample_rate=16_000, seconds=1.0))
    reads = []
    real = sf.SoundFile.read
    sf.SoundFile.read = lambda self, frames=-1, **k: reads.append(frames) or real(self, frames, **k)
    try:
        got = proc.decode_bytes(buf.getvalue())
    finally:
        sf.SoundFile.read = real
    assert 0 < reads[0] <= 48_000 * 1.1 + 2  # not the 1.44 M frames of the file
    whole, _ = sf.read(io.BytesIO(buf.getvalue()), dtype="float32", always_2d=True)
    full = proc.to_array(whole.mean(1), 48_000)  # decoding everything gives the same first second
    assert np.abs(got - full).max() < 1e-5


def test_a_date_column_becomes_days_elapsed_and_points_on_circles(dataset, tmp_path):
    from sklearn.linear_model import LogisticRegression

    from mmfit.data.modalities.tabular import DATE_PARTS, TabularProcessor

    df = pd.read_csv(dataset, dtype=str, keep_default_na=False)
    dates = pd.date_range("2023-12-20", periods=len(df), freq="D")
    df["visit"] = [f"{d:%d/%m/%Y}" for d in dates]  # 20/12/2023: day first, as the column shows
    df.loc[4, "visit"] = ""  # missing: masked, the row kept
    df.to_csv(dataset, index=False)
    cfg = tiny_config(dataset, tmp_path)
    cfg["data"]["columns"] = {"text": "text", "visit": "datetime"}
    pre, splits, _ = _prep(cfg)
    assert pre.tabular.number_features == [f"visit.{p}" for p in DATE_PARTS] and pre.tabular.dayfirst == {"visit": True}
    everything = pre.transform(df, dataset.parent)[0]
    vals, mask = everything.inputs["tabular"]["values"].numpy(), everything.inputs["tabular"]["feature_mask"].numpy()
    assert not mask[4].any() and mask[np.arange(len(df)) != 4].all()
    raw = vals * np.array([pre.tabular.stats[f]["std"] for f in pre.tabular.number_features]) + np.array(
        [pre.tabular.stats[f]["mean"] for f in pre.tabular.number_features])
    assert np.allclose(np.diff(raw[5:, 0]), 1.0, atol=1e-4)  # one day apart, in order: 13/01 read as 13 January
    year = raw[:, 1:3]  # 31 December sits next to 1 January on the year's circle, not a year away
    assert np.isclose(np.linalg.norm(year[11] - year[12]), 2 * np.sin(np.pi / 365), atol=1e-3)  # a day apart
    assert np.isclose(np.linalg.norm(year[11] - year[40]), 2 * np.sin(np.pi * 29 / 365), atol=5e-3)  # 2024: 366 days
    weekend = np.array([d.dayofweek >= 5 for d in dates])  # the day of the week is there to read
    ok = np.arange(len(df)) != 4
    fit = LogisticRegression(C=100, max_iter=2000).fit(vals[ok][:, 3:5], weekend[ok])
    assert fit.score(vals[ok][:, 3:5], weekend[ok]) == 1.0
    same = TabularProcessor.from_state(pre.tabular.state())  # a saved run reads 01/02/2024 as 1 February again
    assert same.dayfirst == {"visit": True} and same.number_features == pre.tabular.number_features
    one = pd.DataFrame({"visit": ["01/02/2024"]})
    parsed = same.parse(one, np.arange(1), lambda v: v == "", None)
    assert np.isclose(parsed["values"][0, 0], (pd.Timestamp("2024-02-01") - pd.Timestamp("2000-01-01")).days)
    df.loc[7, "visit"] = "31/02/2024"
    df.to_csv(dataset, index=False)
    with pytest.raises(DataError, match=r"row 7, column 'visit': '31/02/2024' is not a date"):
        _prep(cfg)


def test_files_held_in_the_cells_as_hugging_face_datasets_store_them(dataset, tmp_path):
    """A Parquet export of a Hugging Face `datasets` Image/Audio column: each cell a {'bytes', 'path'}
    struct. Roles are read from the contents, the files decoded from the cells, and a bad one is
    named by its size, not printed."""
    from mmfit.data.infer import infer_roles

    df = pd.read_csv(dataset, dtype=str, keep_default_na=False)
    blobs = df.copy()
    for col in ("image", "audio"):
        blobs[col] = [{"bytes": (dataset.parent / v).read_bytes(), "path": v} for v in df[col]]
    blobs.at[7, "image"] = {"bytes": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "path": "broken.png"}
    path = tmp_path / "hf.parquet"
    blobs.to_parquet(path)
    roles = {c.column: (c.role, c.reason) for c in infer_roles(read_manifest(path), ["label"], tmp_path)}
    assert roles["image"][0] == "image" and "held in the cells" in roles["image"][1]
    assert roles["audio"][0] == "audio"
    cfg = tiny_config(path, tmp_path, data__on_error="skip")
    pre, splits, errors = _prep(cfg)
    assert sum(len(s) for s in splits.values()) == 59
    [bad] = errors.errors
    assert (bad.row, bad.column, bad.file) == (7, "image", "<48 bytes>")


def test_a_vector_column_is_standardised_numbers_read_as_one_token(dataset, tmp_path):
    from mmfit.data.modalities.tabular import TabularProcessor
    from mmfit.models.encoders.scratch import ScratchTabular
    from mmfit.models.encoders.spec import EncoderSpec

    df = pd.read_csv(dataset, dtype=str, keep_default_na=False)
    k = np.array(["abc".index(v) for v in df["label"]])
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(df), 5)) + 10 * np.eye(5)[k]  # an embedding computed elsewhere
    df["emb"] = [json.dumps(list(e.round(4))) for e in emb]  # as a CSV holds it
    df.loc[4, "emb"] = "[]"  # no embedding for this row: missing
    df.to_csv(dataset, index=False)
    cfg = tiny_config(dataset, tmp_path)
    cfg["data"]["columns"] = {"text": "text", "x1": "numeric", "emb": "vector", "color": "categorical"}
    pre, splits, _ = _prep(cfg)
    tab = pre.tabular
    assert tab.number_features == ["x1"] + [f"emb[{i}]" for i in range(5)] and tab.vector_sizes == [5]
    assert tab.by_column(np.arange(6.0)) == {"x1": 0.0, "emb": 15.0}  # an attribution per column
    everything = pre.transform(df, dataset.parent)[0]
    vals, mask = everything.inputs["tabular"]["values"].numpy(), everything.inputs["tabular"]["feature_mask"].numpy()
    assert not mask[4, 1:6].any() and mask[np.arange(len(df)) != 4, 1:6].all() and mask[4, 0]
    train = splits["train"].rows.numpy()
    assert np.allclose(vals[train, 1:6].mean(0), 0, atol=1e-5)  # each number standardised on the training rows
    enc = ScratchTabular(EncoderSpec("tabular", dim=8, layers=1, heads=2, n_numeric=6, vector_sizes=[5],
                                     cat_sizes=[len(tab.vocab["color"])]))
    out = enc(everything.inputs["tabular"])
    assert out.tokens.shape[1] == 3  # x1, emb, color: one token each
    assert out.mask[4].tolist() == [True, False, True]  # the missing vector's token is masked
    same = TabularProcessor.from_state(json.loads(json.dumps(tab.state())))  # a saved run reads lists again
    parsed = same.parse(pd.DataFrame({"x1": ["1"], "emb": [[0.5, 1, 2, 3, 4]], "color": ["r"]}), np.arange(1),
                        lambda v: v == "", None)
    assert parsed["values"][0].tolist() == [1, 0.5, 1, 2, 3, 4]
    lists = df.copy()  # a Parquet manifest holds arrays: the same numbers
    lists["emb"] = [json.loads(v) for v in lists["emb"]]
    lists.to_parquet(dataset.with_suffix(".parquet"))
    pq, _, _ = _prep({**cfg, "data": {**cfg["data"], "manifest": str(dataset.with_suffix(".parquet"))}})
    assert pq.tabular.stats == tab.stats
    df.loc[7, "emb"] = "[1, 2, 3]"
    df.loc[9, "emb"] = "[1, 2, x, 4, 5]"
    df.to_csv(dataset, index=False)
    with pytest.raises(DataError, match=r"(?s)row 7, column 'emb': holds 3 numbers; the column's lists hold 5.*"
                                        r"row 9, column 'emb': 'x' in '\[1, 2, x, 4, 5\]' is not a \(finite\) number"):
        _prep(cfg)
