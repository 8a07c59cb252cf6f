"""--backend ray on a local Ray cluster (ray.init(num_cpus=2)): the same results as the local path.

`mmfit predict RUN DATA --backend ray`: a manifest cut into shards (CSV and Parquet, read by Ray
tasks), predicted by a pool of actors, written as Parquet; every value equals `mmfit predict`'s on
the same rows, and a row with a broken file is listed (shard, row, column, file), none lost."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import make_dataset, tiny_config
from mmfit import api
from mmfit.cli import app

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from rich.console import Console

    root = tmp_path_factory.mktemp("ray")
    manifest = make_dataset(root / "data", n=45)
    cfg = tiny_config(manifest, root, train__epochs=1)
    return manifest, api.train(cfg, run_dir=root / "run", console=Console(quiet=True))


@pytest.mark.slow
def test_predict_on_ray_equals_the_local_path_and_lists_bad_rows(cluster, trained, tmp_path, quiet_console):
    manifest, run = trained
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    df.loc[4, "image"] = "img/not-there.png"  # a missing file: listed, the row's other shards go on
    (manifest.parent / "bad.png").write_bytes(b"not a png")
    df.loc[30, "image"] = "bad.png"
    shards = tmp_path / "shards"
    shards.mkdir()
    df.iloc[:20].to_csv(shards / "a.csv", index=False)
    df.iloc[20:].to_parquet(shards / "b.parquet", index=False)
    local = pd.concat([api.predict(run, df.iloc[:20], root=manifest.parent, on_error="skip"),
                       api.predict(run, df.iloc[20:].reset_index(drop=True), root=manifest.parent, on_error="skip")
                       .assign(row=lambda d: d["row"] + 20)], ignore_index=True)
    r = CliRunner().invoke(app, ["predict", str(run), str(shards), "--backend", "ray", "--on-error", "skip",
                                 "--root", str(manifest.parent), "-o", str(tmp_path / "out"), "--workers", "2"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    got = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "out").glob("*.parquet"))], ignore_index=True)
    got["row"] = got["row"] + 20 * got["shard"]  # shard a: rows 0-19; shard b: rows 20-44
    assert len(got) == 43 and got["row"].tolist() == local["row"].tolist()
    for col in local.columns.drop("row"):
        if col.endswith(tuple(f"_prob_{c}" for c in "abc")) or col == "score":
            assert (got[col] - local[col]).abs().max() < 1e-5, col
        else:
            assert got[col].tolist() == local[col].tolist(), col
    listed = pd.read_csv(tmp_path / "out" / "skipped.csv")
    assert sorted(zip(listed["shard"], listed["row"])) == [(0, 4), (1, 10)]
    assert set(listed["column"]) == {"image"} and not listed["predicted"].any()
    assert "not-there.png" in " ".join(listed["file"].astype(str) + listed["reason"])
    assert "predicted 43 of 45 rows on Ray" in r.output.replace("\n", " ")
    # raise (the default): the first bad row stops the job, named by its shard and row
    with pytest.raises(Exception, match=r"row 4.*image|image.*row 4"):
        api.predict(run, str(shards), tmp_path / "out2", root=manifest.parent, backend="ray", workers=1,
                    console=quiet_console)
    assert not (tmp_path / "out2").exists()
