"""Column roles inferred from content: every manifest the repository makes, and adversarial columns."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

from conftest import make_dataset
from mmfit.config import ConfigError, load_config
from mmfit.data.infer import data_config, folder_manifest, infer_roles, target_type


def _roles(df, targets=("y",), root=None, **over):
    return {c.column: c.role for c in infer_roles(df, list(targets), root, over or None)}


def test_the_test_manifest(tmp_path):
    m = make_dataset(tmp_path / "d")
    df = pd.read_csv(m, dtype=str, keep_default_na=False)
    roles = _roles(df, ["label"], m.parent)
    assert roles == {"id": "ignore", "group": "categorical", "image": "image", "audio": "audio", "text": "text",
                     "x1": "numeric", "color": "categorical", "label": "target", "tags": "categorical",
                     "score": "numeric"}
    with_split = pd.read_csv(make_dataset(tmp_path / "e", with_split=True), dtype=str, keep_default_na=False)
    assert _roles(with_split, ["label"], tmp_path / "e")["split"] == "split"


def test_the_demo_manifest(tmp_path):
    from mmfit.data.demo import generate

    m = generate(tmp_path / "demo", n=80)
    df = pd.read_csv(m, dtype=str, keep_default_na=False)
    choices = infer_roles(df, ["diagnosis", "severity"], m.parent)
    roles = {c.column: c.role for c in choices}
    assert roles == {"patient_id": "ignore", "scan": "image", "report": "text", "voice_note": "audio",
                     "age": "numeric", "smoker": "categorical", "diagnosis": "target", "severity": "target"}
    cfg = load_config({"data": data_config(choices, str(m), m.parent)})
    assert cfg.data.targets["diagnosis"].type == "classification" and cfg.data.targets["severity"].type == "regression"
    assert cfg.model.encoders["report"].name == "minilm" and cfg.model.encoders["scan"].name == "efficientnet-lite0"
    assert cfg.data.image.size == 224  # the size the image encoder was trained at


def _wav() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(800, np.float32), 8000, format="WAV")
    return buf.getvalue()


def test_adversarial_columns(tmp_path):
    n = 40
    (tmp_path / "noext").mkdir()
    for i in range(n):  # files without extensions: told apart by reading them
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "noext" / f"img{i}", format="PNG")
        (tmp_path / "noext" / f"snd{i}").write_bytes(_wav())
    df = pd.DataFrame({
        "num_as_text": [f"{i * 0.5:.1f}" for i in range(n)],
        "pics": [f"noext/img{i}" for i in range(n)],
        "sounds": [f"noext/snd{i}" for i in range(n)],
        "mostly_empty": ["x" if i == 0 else "" for i in range(n)],
        "row_id": [str(1000 + i) for i in range(n)],
        "uuid": [f"k{i:05d}x" for i in range(n)],
        "const": ["same"] * n,
        "level": [["low", "mid", "high"][i % 3] for i in range(n)],
        "notes": [f"patient {i} reports mild pain after the visit" for i in range(n)],
        "y": [str(i % 2) for i in range(n)],
    })
    roles = _roles(df, root=tmp_path)
    assert roles == {"num_as_text": "numeric", "pics": "image", "sounds": "audio", "mostly_empty": "ignore",
                     "row_id": "ignore", "uuid": "ignore", "const": "ignore", "level": "categorical", "notes": "text",
                     "y": "target"}
    assert _roles(df, root=tmp_path, level="text")["level"] == "text"  # an override wins


def test_ambiguous_columns_name_the_column_and_the_override(tmp_path):
    n = 40
    mixed = pd.DataFrame({"price": [str(i) for i in range(n - 2)] + ["n/a", "12kg"], "y": ["a", "b"] * (n // 2)})
    with pytest.raises(ConfigError, match=r"column 'price': 95% .*'12kg'.*--column price=numeric"):
        infer_roles(mixed, ["y"], tmp_path)
    missing = pd.DataFrame({"img": [f"x/{i}.png" for i in range(n)], "y": ["a", "b"] * (n // 2)})
    with pytest.raises(ConfigError, match=r"column 'img' looks like image paths.*do not exist.*--column img=text"):
        infer_roles(missing, ["y"], tmp_path)
    with pytest.raises(ConfigError, match=r"column 'lable' is not in the manifest; did you mean 'label'"):
        infer_roles(pd.DataFrame({"label": ["a"], "x": ["1"]}), ["lable"], tmp_path)
    with pytest.raises(ConfigError, match="the role must be one of"):
        infer_roles(pd.DataFrame({"y": ["a"], "x": ["1"]}), ["y"], tmp_path, {"x": "number"})


def test_target_types():
    assert target_type([str(i * 0.37) for i in range(100)]) == "regression"
    assert target_type(["1", "2", "3"] * 30) == "classification"
    assert target_type(["cat", "dog"] * 30) == "classification"
    # the role table says what decided it, and how to choose the other
    df = pd.DataFrame({"grade": ["1", "2", "3"] * 30, "price": [str(i * 0.37) for i in range(90)],
                       "pet": ["cat", "dog"] * 45, "x": [str(i % 7) for i in range(90)]})
    why = {c.column: c.reason for c in infer_roles(df, ["grade", "price", "pet"]) if c.role == "target"}
    assert why == {"grade": "classification target (3 distinct numbers; --target grade:regression for regression)",
                   "price": "regression target (90 distinct numbers; --target price:classification for "
                            "classification)",
                   "pet": "classification target"}
    cfg = load_config({"data": data_config(infer_roles(df, ["grade", "price", "pet"]), None, None)})
    assert {t: c.type for t, c in cfg.data.targets.items()} == {"grade": "classification", "price": "regression",
                                                               "pet": "classification"}


def test_a_folder_of_class_subfolders_is_a_manifest(tmp_path):
    for c in ("cats", "dogs"):
        (tmp_path / "pets" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "pets" / c / f"{i}.png")
    df = folder_manifest(tmp_path / "pets")
    assert list(df.columns) == ["image", "label"] and sorted(set(df["label"])) == ["cats", "dogs"]
    assert df["image"][0] == "cats/0.png"
    (tmp_path / "pets" / "dogs" / "x.wav").write_bytes(_wav())
    with pytest.raises(ConfigError, match="files of several kinds"):
        folder_manifest(tmp_path / "pets")


def test_a_manifest_of_absolute_paths_elsewhere_gets_a_root_that_holds_them(tmp_path):
    """Every file path absolute and outside the manifest's folder: zero-config moves the data root to the
    folder that holds the files (printed, written in the config), so training reads what inference
    looked at; relative paths keep the manifest's folder, a given --root is kept, and paths outside the
    root stay refused with a message that says how to widen it."""
    from rich.console import Console

    from mmfit import api
    from mmfit.data.infer import files_root
    from mmfit.data.manifest import PathResolver

    for d in ("a", "b"):
        (tmp_path / "store" / d).mkdir(parents=True)
    (tmp_path / "project").mkdir()
    rows = []
    for i in range(12):
        path = tmp_path / "store" / "ab"[i % 2] / f"{i}.png"
        Image.fromarray(np.full((8, 8), 20 * i, np.uint8)).save(path)
        rows.append({"picture": str(path), "y": "pq"[i % 2]})
    manifest = tmp_path / "project" / "m.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    df = pd.read_csv(manifest)
    choices = infer_roles(df, ["y"], manifest.parent)
    store = (tmp_path / "store").resolve()
    assert files_root(df, choices, manifest.parent) == store
    buf = io.StringIO()
    cfg = load_config(api.init(manifest, "y", output=tmp_path / "cfg.yaml", console=Console(file=buf, width=300)))
    assert cfg.data.root == str(store) and f"data root: {store}" in buf.getvalue()
    assert all(PathResolver(store).resolve(p)[0] is not None for p in df["picture"])
    relative = df.assign(picture=[f"../store/{'ab'[i % 2]}/{i}.png" for i in range(12)])
    assert files_root(relative, choices, manifest.parent) == manifest.parent.resolve()  # relative to the manifest
    given = load_config(api.init(manifest, "y", output=tmp_path / "given.yaml", root=manifest.parent,
                                 console=Console(file=io.StringIO())))
    assert given.data.root == str(manifest.parent)  # the user's root is not moved
    reason = PathResolver(manifest.parent).resolve(df["picture"][1])[1]
    assert "outside the data root" in reason and "set data.root, or --root" in reason


def test_dates_and_time_stamps_are_a_role_of_their_own(tmp_path):
    n = 40
    days = pd.date_range("2023-12-25", periods=n, freq="D")
    df = pd.DataFrame({
        "iso": [f"{d:%Y-%m-%d}" for d in days],
        "day_first": [f"{d:%d/%m/%Y %H:%M}" for d in days + pd.Timedelta(hours=14)],  # 25/12/2023 14:00
        "month_first": [f"{d:%m/%d/%Y}" for d in days],  # slashes, but a date and not a path
        "spelled": [f"{d:%d %B %Y}" for d in days],
        "stamps": list(days + pd.Timedelta(hours=9)),  # a DataFrame's own datetime values
        "clock": [f"{9 + i % 8}:30" for i in range(n)],  # a time without a date is not a date
        "yyyymmdd": [f"{d:%Y%m%d}" for d in days],  # a number, as a spreadsheet would read it
        "y": ["a", "b"] * (n // 2),
    })
    choices = {c.column: c for c in infer_roles(df, ["y"], tmp_path)}
    assert {c: choices[c].role for c in df.columns} == {
        "iso": "datetime", "day_first": "datetime", "month_first": "datetime", "spelled": "datetime",
        "stamps": "datetime", "clock": "categorical", "yyyymmdd": "numeric", "y": "target"}
    assert "dates (2023-12-25 to 2024-02-02)" in choices["iso"].reason
    assert choices["day_first"].reason.startswith("time stamps (2023-12-25 to 2024-02-02): ")
    assert choices["day_first"].reason.endswith("time of day; day first")
    assert "2023-12-25 to 2024-02-02" in choices["month_first"].reason  # read month first, consistently
    cfg = load_config({"data": data_config(list(choices.values()), "m.csv", tmp_path)})
    assert cfg.data.columns["iso"].role == "datetime"
    typo = df[["iso", "y"]].copy()
    typo.loc[3, "iso"] = "2024-13-45"
    typo.loc[5, "iso"] = "soon"
    with pytest.raises(ConfigError, match=r"column 'iso': 95% of its values are dates, but not '2024-13-45', 'soon'; "
                                          r".*--column iso=datetime"):
        infer_roles(typo, ["y"], tmp_path)


def test_unlabelled_rows_stop_zero_config_before_any_file_is_read_and_rare_classes_are_named(tmp_path):
    import mmfit
    from mmfit.data.errors import DataError
    from mmfit.data.infer import target_checks

    rng = np.random.default_rng(0)
    n = 60
    df = pd.DataFrame({"x": rng.normal(size=n).round(3).astype(str),
                       "note": [f"words {i} and {rng.integers(99)} more" for i in range(n)],
                       "y": ["a", "b", "c"] * (n // 3)})
    df.loc[[4, 17], "y"] = ""  # unlabelled
    df.loc[[5], "y"] = "lonely"  # a class of one row
    cfg = load_config({"data": {"columns": {"x": {"role": "numeric"}}, "targets": {"y": {}}}})
    errors, notes = target_checks(df, cfg.data.targets, cfg.data.na_values)
    assert [(e.row, e.column, e.reason) for e in errors] == [(4, "y", "row has no target value"),
                                                             (17, "y", "row has no target value")]
    assert len(notes) == 1 and "'lonely' (1)" in notes[0] and "fewer than 3 rows" in notes[0]
    # a target with a class per row reads as an identifier (or a number to regress on)
    ids = pd.DataFrame({"x": df["x"], "y": [f"id{i}" for i in range(n)]})
    _, notes = target_checks(ids, cfg.data.targets, cfg.data.na_values)
    assert len(notes) == 1 and "--target y:regression" in notes[0]
    # zero-config stops on them at once, naming rows and the way on; nothing is trained or decoded
    with pytest.raises(DataError, match=r"(?s)row 4, column 'y': row has no target value.*data.on_error=skip"):
        mmfit.fit(df, target="y", run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    # mmfit init only writes the config: it says so instead of stopping
    df.to_csv(tmp_path / "m.csv", index=False)
    from rich.console import Console

    console = Console(record=True, width=200)
    mmfit.init(tmp_path / "m.csv", target="y", output=tmp_path / "c.yaml", console=console)
    text = console.export_text()
    assert "2 row(s) have no target value (rows 4, 17)" in text and "'lonely' (1)" in text


def test_numbers_as_spreadsheets_show_them_are_numbers():
    from mmfit.data.errors import ErrorLog
    from mmfit.data.modalities.tabular import TabularProcessor

    n = 40
    df = pd.DataFrame({"price": [f"${1000 + 37 * i:,}.50" for i in range(n)],  # $1,000.50
                       "share": [f"{i % 17}%" for i in range(n)], "plain": [str(i * 0.5) for i in range(n)],
                       "y": ["a", "b"] * (n // 2)})
    assert _roles(df) == {"price": "numeric", "share": "numeric", "plain": "numeric", "y": "target"}
    proc = TabularProcessor(["price", "share"], [])
    errors = ErrorLog("raise")
    parsed = proc.parse(df.head(3), np.arange(3), lambda v: v == "", errors)
    assert not errors.errors
    assert parsed["values"].tolist() == [[1000.5, 0.0], [1037.5, 1.0], [1074.5, 2.0]]
    for bad in ("12 kg", "1,2", "(5)", "$"):  # units, a lone decimal comma, accounting brackets: not numbers
        errors = ErrorLog("skip")
        proc.parse(pd.DataFrame({"price": [bad], "share": ["1"]}), np.arange(1), lambda v: v == "", errors)
        assert [e.reason for e in errors.errors] == [f"{bad!r} is not a number"]


def test_a_workbook_with_a_title_above_the_table_or_several_sheets(tmp_path):
    from mmfit.data.infer import read_any

    df = pd.DataFrame({"note": [f"word {i}" for i in range(30)], "x": [str(i) for i in range(30)],
                       "y": ["a", "b", "c"] * 10})
    titled = tmp_path / "titled.xlsx"
    with pd.ExcelWriter(titled) as w:  # a title, then a blank row, then the table
        pd.DataFrame([["Export of 2024-06-10"]]).to_excel(w, index=False, header=False)
        df.to_excel(w, index=False, startrow=2)
    with pytest.raises(ConfigError, match=r"columns have no name in the first row.*remove any title"):
        read_any(titled)
    book = tmp_path / "book.xlsx"
    with pd.ExcelWriter(book) as w:
        df.to_excel(w, sheet_name="rows", index=False)
        df.head(2).to_excel(w, sheet_name="notes", index=False)
    back, _, _ = read_any(book)
    assert back.values.tolist() == df.values.tolist() and back.attrs["read_as"] == "its first sheet, 'rows' (of 2: 'rows', 'notes')"


def test_a_folder_of_split_folders_of_class_folders(tmp_path):
    """train/ and test/ of class subfolders (torchvision's ImageFolder layout): the splits are kept, a
    stratified share of train/ validates, and a stray file is left out and said."""
    from mmfit.data.infer import read_any

    for split, n in (("train", 20), ("test", 4)):
        for c in ("cats", "dogs"):
            (tmp_path / "pets" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "pets" / split / c / f"{i}.png")
    (tmp_path / "pets" / "train" / "cats" / "Thumbs.db").write_bytes(b"\x00" * 16)
    df, root, folder = read_any(tmp_path / "pets")
    assert folder and list(df.columns) == ["image", "label", "split"]
    assert sorted(set(df["label"])) == ["cats", "dogs"] and len(df) == 48  # Thumbs.db is no example
    counts = df.groupby(["split", "label"]).size().to_dict()
    assert counts == {("test", "cats"): 4, ("test", "dogs"): 4, ("train", "cats"): 17, ("train", "dogs"): 17,
                      ("val", "cats"): 3, ("val", "dogs"): 3}
    assert set(df.loc[df["split"] == "test", "image"].str.split("/").str[0]) == {"test"}
    assert "1 file(s) that are no image, sound or video left out (Thumbs.db)" in df.attrs["read_as"]
    assert "test/ as test, train/ as train" in df.attrs["read_as"] and "15% of train/" in df.attrs["read_as"]
    assert {c.column: c.role for c in infer_roles(df, ["label"], root)}["split"] == "split"


def test_missing_number_markers_of_spreadsheets_are_missing_where_the_rest_are_numbers(tmp_path):
    import mmfit
    from mmfit.data.infer import data_config

    rng = np.random.default_rng(1)
    n = 80
    age = [str(int(a)) for a in rng.integers(20, 90, n)]
    price = [f"{p:.2f}" for p in rng.normal(100, 20, n)]
    for i in (3, 9, 40):
        age[i] = "n/a"
    price[5], price[6] = "NA", "-"
    df = pd.DataFrame({"age": age, "smoker": (["none", "daily", "weekly", "n/a"] * n)[:n],
                       "note": [f"visit {i} of {rng.integers(99)}" for i in range(n)], "price": price})
    choices = infer_roles(df, ["price"])
    why = {c.column: c.reason for c in choices}
    assert {c.column: c.role for c in choices} == {"age": "numeric", "smoker": "categorical", "note": "text",
                                                   "price": "target"}
    assert why["age"].endswith("; 'n/a' in 3 cells read as missing")
    assert why["price"].startswith("regression target (78 distinct numbers; '-', 'NA' read as missing;")
    cfg = load_config({"data": data_config(choices, None, None)})
    assert cfg.data.na_values == ["", "-", "NA", "n/a"]
    # a column of words keeps its words: 'none' is a class there, not a missing label
    assert infer_roles(df, ["smoker"])[1].reason == "classification target"
    # and the rows whose target is a marker are what the early check names
    path = tmp_path / "m.csv"
    df.to_csv(path, index=False)
    from mmfit.data.errors import DataError

    with pytest.raises(DataError, match=r"(?s)row 5, column 'price': row has no target value.*row 6"):
        mmfit.fit(path, target="price", run_dir=tmp_path / "run")


def test_files_shared_by_rows_are_named_before_a_seeded_split(tmp_path):
    from mmfit.data.infer import shared_files

    (tmp_path / "img").mkdir()
    for i in range(10):
        Image.fromarray(np.full((8, 8), 20 * i, np.uint8)).save(tmp_path / "img" / f"{i}.png")
    df = pd.DataFrame({"scan": [f"img/{i % 10}.png" for i in range(30)], "y": ["a", "b", "c"] * 10})
    choices = infer_roles(df, ["y"], tmp_path)
    notes = shared_files(df, choices)
    assert len(notes) == 1 and "column 'scan': 30 rows share their file with another row (10 files" in notes[0]
    assert "data.split.group_column=" in notes[0]
    assert shared_files(df.head(10), infer_roles(df.head(10), ["y"], tmp_path)) == []


def test_lists_of_numbers_are_a_vector_and_lists_of_words_are_not(tmp_path):
    n, rng = 40, np.random.default_rng(0)
    vecs = [rng.normal(size=4).round(3) for _ in range(n)]
    df = pd.DataFrame({
        "lists": [list(v) for v in vecs],  # JSONL, a DataFrame
        "arrays": vecs,  # Parquet
        "text": [str([float(x) for x in v]) for v in vecs],  # a CSV: "[0.1, -0.2, ...]"
        "printed": [np.array2string(v) for v in vecs],  # numpy's own print: "[ 0.1 -0.2 ...]"
        "tags": [["x", "y"] if i % 2 else ["z"] for i in range(n)],  # words: not a vector
        "y": ["a", "b"] * (n // 2),
    })
    df.loc[3, "lists"] = []  # an empty list is a missing value
    choices = {c.column: c for c in infer_roles(df, ["y"], tmp_path)}
    assert {c: choices[c].role for c in ("lists", "arrays", "text", "printed")} == dict.fromkeys(
        ("lists", "arrays", "text", "printed"), "vector")
    assert choices["text"].reason.startswith("lists of 4 numbers") and choices["tags"].role != "vector"
    cfg = load_config({"data": data_config(list(choices.values()), "m.jsonl", tmp_path)})
    assert cfg.data.columns["arrays"].role == "vector"
    ragged = df[["lists", "y"]].copy()
    ragged.at[5, "lists"] = [1.0, 2.0, 3.0]
    with pytest.raises(ConfigError, match=r"column 'lists' holds lists of numbers of different lengths \(4 numbers in "
                                          r"38 rows, 3 numbers in 1 rows\).*--column lists=vector"):
        infer_roles(ragged, ["y"], tmp_path)
    typo = df[["text", "y"]].copy()
    typo.loc[7, "text"] = "[0.1, oops, 0.3, 0.4]"
    with pytest.raises(ConfigError, match=r"column 'text': 98% of its cells are lists of numbers, but not "
                                          r"'\[0.1, oops, 0.3, 0.4\]'.*--column text=vector"):
        infer_roles(typo, ["y"], tmp_path)
    files = pd.DataFrame({"scans": [[f"img/{i}.png", f"img/{i + 1}.png"] for i in range(n)], "y": df["y"]})
    for cells in (files, files.astype({"scans": str})):  # lists, or lists written as text in a CSV
        with pytest.raises(ConfigError, match=r"column 'scans' holds lists of files \(up to 2 in a cell\).*"
                                              r"scans_1, scans_2.*--column scans=ignore"):
            infer_roles(cells, ["y"], tmp_path)
    assert _roles(files, scans="ignore")["scans"] == "ignore"  # the way out it names
