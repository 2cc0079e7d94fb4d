"""`reinforcement register` and `register_model`: on the embedded PostgreSQL and on Supabase (through the
emulated HTTP APIs of supabase_transport.py)."""

import hashlib
import warnings

import joblib
import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from reinforcement_assets.cli import main
from reinforcement_assets.demo import drift_scenario, log_traffic
from reinforcement_assets.registration import RegistrationError, register_model
from reinforcement_tests.supabase_transport import emulated_resources
from reinforcement_tests.test_graph import END, START

NAMES = [f"x{i}" for i in range(10)]


@pytest.fixture(params=["postgres", "supabase"])
def backend(request, monkeypatch, database_url, tmp_path, store, artifacts, project):
    """The command's resources on either backend; `store` (Postgres) reads the same database back."""
    monkeypatch.setenv("REINFORCEMENT_DATABASE_URL", database_url)
    if request.param == "supabase":
        resources = emulated_resources(project)
        monkeypatch.setattr("reinforcement_assets.defs.resources.default_resources", lambda: resources)
        return resources["store"], resources["artifacts"], request.param
    monkeypatch.setattr("reinforcement_assets.settings.DATA_DIR", str(tmp_path))
    return store, artifacts, request.param


@pytest.fixture(scope="module")
def scenario():
    return drift_scenario(1_000, seed=31, train_rows=1_500, after_rows=200)


@pytest.fixture(scope="module")
def int_model(scenario):
    X, y = scenario.train
    return HistGradientBoostingClassifier(max_iter=15, random_state=0).fit(X, [int(v[-1]) for v in y])


def test_register_copies_the_file_records_it_and_measures_its_reference_accuracy(
        backend, store, project, scenario, int_model, tmp_path, capsys):
    sb_or_pg, artifacts, _ = backend
    path = tmp_path / "int_model.joblib"
    joblib.dump(int_model, path)
    X, y = scenario.window
    log, _ = log_traffic(int_model, X, np.array([int(v[-1]) for v in y]), START, END, model_version="ints-v3",
                         bad_row_share=0.0, seed=31)
    sb_or_pg.insert_evaluations(log)
    project.requests.clear()

    assert main(["register", str(path), "--version", "ints-v3", "--champion", "--reason", "our production model"]) == 0
    out = capsys.readouterr()
    assert out.err == "" and "registered ints-v3" in out.out and "classes ['0', '1', '2'] (int)" in out.out
    champion = store.champion()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (champion.version, champion.sha256, champion.promotion_reason) == ("ints-v3", digest, "our production model")
    assert champion.feature_names == tuple(NAMES) and champion.classes == ("0", "1", "2")
    assert (champion.class_type, champion.base_size, champion.fine_tuned) == ("int", 15, False)
    logged = float((log["predicted_label"] == log["actual_label"]).mean())
    assert champion.reference_accuracy == pytest.approx(logged)
    # A reference for every metric the decay trigger may watch, from the same rows.
    y_true, y_pred = log["actual_label"].astype(int), log["predicted_label"].astype(int)
    assert champion.metrics["accuracy"] == pytest.approx(logged)
    assert champion.metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert champion.metrics["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert champion.metrics["registered_from_logged_rows"] == len(log)
    assert artifacts.read(champion.artifact_path, digest) == path.read_bytes()  # the user's bytes, unchanged
    assert sb_or_pg.champion() == champion
    if backend[2] == "supabase":  # the file went to Storage, the row through PostgREST
        assert project.sent("POST", "/storage/v1/object/") and project.sent("POST", "/rest/v1/model_versions")
        assert project.sent("POST", "/rest/v1/rpc/promote_model_version")


def test_register_warns_without_logged_rows_and_keeps_the_champion_unless_asked(backend, store, int_model, tmp_path,
                                                                               capsys):
    sb_or_pg, _, _ = backend
    joblib.dump(int_model, tmp_path / "a.joblib")
    assert main(["register", str(tmp_path / "a.joblib"), "--version", "a", "--champion"]) == 0
    assert "no logged prediction carries model_version 'a'" in capsys.readouterr().err
    joblib.dump(int_model, tmp_path / "b.joblib")
    assert main(["register", str(tmp_path / "b.joblib"), "--reference-accuracy", "0.91"]) == 0
    out = capsys.readouterr()
    assert "not promoted" in out.out and "--reference-accuracy" not in out.err
    (b,) = [v for v in store.model_versions() if v.version.startswith("b-")]
    assert b.reference_accuracy == 0.91 and not b.is_champion and store.champion().version == "a"
    assert b.metrics == {"registered_from_logged_rows": 0}  # no rows: no reference for the other metrics


def test_register_refuses_what_is_not_a_fitted_classifier_with_feature_names(backend, store, scenario, tmp_path,
                                                                             capsys):
    X, y = scenario.train
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = {
            "regressor": (HistGradientBoostingRegressor(max_iter=5).fit(X, np.arange(len(X))), [],
                          "is not a scikit-learn classifier"),
            "unfitted": (make_pipeline(StandardScaler(), LogisticRegression()), [], "is not fitted"),
            "unnamed": (LogisticRegression(max_iter=300).fit(X.to_numpy(), y), [], "fitted without feature names"),
        }
    for name, (model, options, message) in cases.items():
        joblib.dump(model, tmp_path / f"{name}.joblib")
        assert main(["register", str(tmp_path / f"{name}.joblib"), *options]) == 2, name
        assert message in capsys.readouterr().err, name
    (tmp_path / "notes.joblib").write_text("not a pickle")
    assert main(["register", str(tmp_path / "notes.joblib")]) == 2
    assert "cannot be read with joblib" in capsys.readouterr().err
    assert main(["register", str(tmp_path / "missing.joblib")]) == 2
    assert "no file" in capsys.readouterr().err
    assert main(["register", str(tmp_path / "unnamed.joblib"), "--version", "bad/version"]) == 2
    assert "must be 1-128 letters" in capsys.readouterr().err
    assert store.model_versions() == []

    # Named on the command line, a model fitted on an array is accepted.
    assert main(["register", str(tmp_path / "unnamed.joblib"), "--feature-names", ",".join(NAMES)]) == 0
    assert store.model_versions()[0].feature_names == tuple(NAMES)


def test_promotion_is_the_registrys_compare_and_swap(backend, store, int_model, tmp_path, monkeypatch):
    sb_or_pg, artifacts, _ = backend
    joblib.dump(int_model, tmp_path / "m.joblib")
    register_model(sb_or_pg, artifacts, tmp_path / "m.joblib", version="first", champion=True,
                   reference_accuracy=0.9)
    real_champion = type(sb_or_pg).champion
    # Another promotion lands between reading the champion and swapping it.
    monkeypatch.setattr(type(sb_or_pg), "champion", lambda self: None)
    with pytest.raises(RegistrationError, match="the champion changed to first meanwhile"):
        register_model(sb_or_pg, artifacts, tmp_path / "m.joblib", version="second", champion=True)
    monkeypatch.setattr(type(sb_or_pg), "champion", real_champion)
    assert store.champion().version == "first"
    assert "second" in [v.version for v in store.model_versions()]  # registered, not promoted


def test_a_version_registered_twice_is_refused_and_the_first_file_is_untouched(backend, store, scenario, int_model,
                                                                             tmp_path, capsys):
    sb_or_pg, artifacts, _ = backend
    joblib.dump(int_model, tmp_path / "a.joblib")
    assert main(["register", str(tmp_path / "a.joblib"), "--version", "v1", "--champion"]) == 0
    X, y = scenario.train
    other = HistGradientBoostingClassifier(max_iter=5, random_state=1).fit(X, y)
    joblib.dump(other, tmp_path / "b.joblib")
    capsys.readouterr()
    assert main(["register", str(tmp_path / "b.joblib"), "--version", "v1"]) == 2
    assert "version 'v1' is already registered" in capsys.readouterr().err
    champion = store.champion()
    assert artifacts.read(champion.artifact_path, champion.sha256) == (tmp_path / "a.joblib").read_bytes()


def test_register_refuses_names_the_runs_could_not_use_and_files_that_are_not_models(backend, store, scenario,
                                                                                   tmp_path, capsys):
    X, y = scenario.train
    reserved = HistGradientBoostingClassifier(max_iter=5).fit(X.rename(columns={"x0": "confidence"}), y)
    joblib.dump(reserved, tmp_path / "reserved.joblib")
    assert main(["register", str(tmp_path / "reserved.joblib")]) == 2
    assert "clash with reserved columns" in capsys.readouterr().err
    joblib.dump(HistGradientBoostingClassifier(max_iter=5).fit(X.to_numpy(), y), tmp_path / "unnamed.joblib")
    assert main(["register", str(tmp_path / "unnamed.joblib"), "--feature-names", ",".join(["x0"] * 10)]) == 2
    assert "repeat a name" in capsys.readouterr().err
    joblib.dump({"not": "a model"}, tmp_path / "dict.joblib")
    assert main(["register", str(tmp_path / "dict.joblib")]) == 2
    assert "builtins.dict is not a scikit-learn classifier" in capsys.readouterr().err
    (tmp_path / "folder.joblib").mkdir()
    assert main(["register", str(tmp_path / "folder.joblib")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert store.model_versions() == []
