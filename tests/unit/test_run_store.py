"""The run store owns every folder mmfit writes: their names, their files (atomically), a run's
checkpoints and the table a run trained from a DataFrame keeps."""

import os

import pandas as pd
import torch

from mmfit.data.manifest import read_manifest
from mmfit.run.layout import CHECKPOINT, FOLDERS, MANIFEST, SEARCH, TRIALS_TABLE
from mmfit.run.store import Run, Study, new_folder


def test_each_kind_of_folder_is_named_by_the_store_and_never_reused(tmp_path):
    for what, prefix in FOLDERS.items():
        first = new_folder(tmp_path, what)
        assert first.parent == tmp_path and first.name.startswith(f"{prefix}-") and not first.exists()
        first.mkdir()
        second = new_folder(tmp_path, what)  # within the same second: <name>-2
        assert second != first and not second.exists() and second.name.startswith(f"{prefix}-")
    named = new_folder(tmp_path, "train", "mine")
    assert named == tmp_path / "mine"
    named.mkdir()
    assert new_folder(tmp_path, "train", "mine") == tmp_path / "mine-2"


def test_a_study_writes_every_file_whole(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    study = Study(tmp_path / "tune-x")
    study.create()
    study.write_text(SEARCH, "train:\n  lr: 0.01\n")
    study.write_text(TRIALS_TABLE, pd.DataFrame({"number": [0, 1], "value": [0.5, 0.7]}).to_csv(index=False))
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    study.write_figure("history.png", fig)
    plt.close(fig)
    assert (study / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pd.read_csv(study / TRIALS_TABLE)["value"].tolist() == [0.5, 0.7]
    assert study.storage() == f"sqlite:///{(tmp_path / 'tune-x' / 'study.db').resolve()}"
    assert study.trial_dir(7) == tmp_path / "tune-x" / "trials" / "trial-0007"
    assert [f for f in os.listdir(study.path) if f.startswith(".")] == []  # no temporary file left behind


def test_a_run_keeps_the_table_it_was_trained_from(tmp_path):
    df = pd.DataFrame({"text": ["a b", "c, d"], "y": ["x", "z"], "n": [1.5, None]})
    run = Run(tmp_path / "fit-1")
    run.create()
    path = run.write_manifest(df)
    assert path == run / MANIFEST
    back = read_manifest(path)
    assert back["text"].tolist() == ["a b", "c, d"] and back["y"].tolist() == ["x", "z"]


def test_checkpoints_are_written_and_read_through_the_run(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    run = Run(tmp_path / "run-1")
    run.create()
    assert not run.has_checkpoint()
    keeper = run.keeper(frozen=set())
    keeper.epoch(model.state_dict(), opt.state_dict(), {"epoch": 1}, True, 0)
    assert run.has_checkpoint() and run.has(CHECKPOINT)
    assert set(run.checkpoint_weights()) == {"weight", "bias"}
    model2, opt2 = torch.nn.Linear(4, 2), None
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    assert run.load_checkpoint(model2, opt2) == {"epoch": 1}
    assert torch.equal(model2.weight, model.weight)
    assert keeper.publish() and set(run.weights()) == {"weight", "bias"}


def test_a_metrics_line_cut_short_by_a_kill_is_left_out(tmp_path):
    run = Run(tmp_path / "run-1")
    run.create()
    run.append_metrics({"epoch": 0, "loss": 1.0})
    run.append_metrics({"epoch": 1, "loss": 0.5})
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 2, "lo')  # the process died while appending epoch 2
    assert [r["epoch"] for r in run.history()] == [0, 1]
    run.keep_metrics_before(2)  # what a resume from epoch 2 does: the file holds whole lines again
    run.append_metrics({"epoch": 2, "loss": 0.25})
    assert [r["epoch"] for r in run.history()] == [0, 1, 2]


def test_a_folder_of_parquet_parts_reads_as_one_manifest(tmp_path):
    """What `--backend ray` writes (part-NNNNN.parquet and skipped.csv) is a manifest a run reads:
    its parts in name order, lists kept as lists; a folder without parts is refused, naming why."""
    import pytest

    from mmfit.data.infer import read_any

    out = tmp_path / "vectors"
    out.mkdir()
    pd.DataFrame({"id": [2, 3], "v": [[0.5, 1.0], [1.5, 2.0]]}).to_parquet(out / "part-00001.parquet")
    pd.DataFrame({"id": [0, 1], "v": [[0.0, 0.1], None]}).to_parquet(out / "part-00000.parquet")
    (out / "skipped.csv").write_text("shard,row,column,reason\n0,1,v,unreadable\n")
    df = read_manifest(out)
    assert df["id"].tolist() == [0, 1, 2, 3] and list(df["v"][2]) == [0.5, 1.0] and df["v"][1] is None
    table, root, class_folders = read_any(out)  # zero-config: one table, not a folder of class folders
    assert len(table) == 4 and root == out.resolve() and not class_folders
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="a folder without Parquet parts"):
        read_manifest(tmp_path / "empty")
