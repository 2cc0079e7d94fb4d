import dagster as dg
import pandas as pd
import pytest

from reinforcement_assets.backends.artifacts import ArtifactIntegrityError, ArtifactIOManager, LocalArtifactStorage


def test_values_round_trip_with_their_sha256(artifacts):
    frame = pd.DataFrame({"x": [1.5, 2.5], "label": ["a", "b"]})
    stored = artifacts.write_value("datasets/one", frame)
    assert stored.path == "datasets/one.parquet" and stored.size_bytes > 0 and len(stored.sha256) == 64
    pd.testing.assert_frame_equal(artifacts.read_value(stored.path, stored.sha256), frame)
    model = artifacts.write_value("models/m", {"weights": [1, 2]})
    assert model.path.endswith(".joblib") and artifacts.read_value(model.path, model.sha256) == {"weights": [1, 2]}


def test_changed_bytes_are_refused(artifacts, tmp_path):
    stored = artifacts.write_value("models/m", {"weights": [1, 2]})
    target = tmp_path / "artifacts" / stored.path
    target.write_bytes(target.read_bytes() + b"\0")
    with pytest.raises(ArtifactIntegrityError, match="refusing to load models/m.joblib"):
        artifacts.read(stored.path, stored.sha256)


@pytest.mark.parametrize("path", ["../escape", "/abs/path", "a/../../b", ""])
def test_paths_cannot_leave_the_root(artifacts, path):
    with pytest.raises(ValueError, match="invalid artifact path"):
        artifacts.write(path, b"x")


@dg.asset
def upstream() -> pd.DataFrame:
    return pd.DataFrame({"x": [1, 2, 3]})


@dg.asset
def downstream(upstream: pd.DataFrame) -> int:
    return int(upstream["x"].sum())


def test_io_manager_round_trip_and_tampering(tmp_path):
    storage = LocalArtifactStorage(base_dir=str(tmp_path))
    resources = {"io_manager": ArtifactIOManager(storage=storage)}
    with dg.instance_for_test() as instance:
        result = dg.materialize([upstream, downstream], resources=resources, instance=instance)
        meta = result.asset_materializations_for_node("upstream")[0].metadata
        path = meta["path"].value
        assert path == f"assets/upstream/{result.run_id}.parquet"
        assert meta["size_bytes"].value == (tmp_path / path).stat().st_size
        assert result.output_for_node("downstream") == 6

        again = dg.materialize([upstream, downstream], selection=[downstream], resources=resources,
                               instance=instance)
        assert again.output_for_node("downstream") == 6  # loads the earlier run's artifact

        (tmp_path / path).write_bytes(pd.DataFrame({"x": [100]}).to_parquet())
        with pytest.raises(ArtifactIntegrityError, match="sha256"):
            dg.materialize([upstream, downstream], selection=[downstream], resources=resources, instance=instance)


def test_an_input_is_read_from_the_run_that_produced_it(tmp_path):
    """Runs overlap: a step must load its own run's upstream artifact, not the newest one."""
    storage = LocalArtifactStorage(base_dir=str(tmp_path))
    io_manager = ArtifactIOManager(storage=storage)
    with dg.instance_for_test() as instance:
        first = dg.materialize([upstream], resources={"io_manager": io_manager}, instance=instance)

        @dg.asset(name="upstream")
        def other_upstream() -> pd.DataFrame:
            return pd.DataFrame({"x": [40, 2]})

        dg.materialize([other_upstream], resources={"io_manager": io_manager}, instance=instance)

        def load(run_id):
            context = dg.build_input_context(
                asset_key=dg.AssetKey("upstream"), instance=instance,
                upstream_output=dg.build_output_context(asset_key=dg.AssetKey("upstream"), run_id=run_id))
            return io_manager.load_input(context)["x"].sum()

        assert load(first.run_id) == 6
        assert load("a-run-that-did-not-materialise-it") == 42  # then the newest materialisation


def test_delete_removes_a_file_and_one_already_gone_is_not_an_error(artifacts, tmp_path):
    stored = artifacts.write("models/m.joblib", b"abc")
    artifacts.delete(stored.path)
    assert not (tmp_path / "artifacts" / "models" / "m.joblib").exists()
    artifacts.delete(stored.path)
    artifacts.delete("never/was.bin")
    with pytest.raises(ValueError, match="invalid artifact path"):
        artifacts.delete("../outside")


def test_a_listing_walks_the_folder_in_path_order_and_skips_writes_under_way(artifacts, tmp_path):
    artifacts.write("assets/b/2.parquet", b"22")
    artifacts.write("assets/a/1.parquet", b"1")
    artifacts.write("logs/run.log", b"log")
    (tmp_path / "artifacts" / "assets" / "a" / "3.parquet.partial").write_bytes(b"half")
    files = artifacts.list_files("assets")
    assert [(f.path, f.size_bytes) for f in files] == [("assets/a/1.parquet", 1), ("assets/b/2.parquet", 2)]
    assert all(f.modified is not None and f.modified.tzinfo is not None for f in files)
    assert [f.path for f in artifacts.list_files()] == ["assets/a/1.parquet", "assets/b/2.parquet", "logs/run.log"]
    assert artifacts.list_files("nothing/here") == []
