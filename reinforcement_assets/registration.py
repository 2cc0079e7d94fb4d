"""Adopting a deployed model: copy its file into artifact storage, register it, optionally promote it.

    from reinforcement_assets.registration import register_model
    register_model(store, artifacts, "model.joblib", version="fraud-v7", champion=True)

is what `reinforcement register model.joblib --version fraud-v7 --champion` does. Unpickling runs
code: only load files you name yourself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any


from .backends.artifacts import ArtifactStorage, decode, encode, sha256_hex
from .backends.store import Store, StoreError
from .core.cycle import NotAClassifier, describe_model
from .core.metrics import GATE_METRICS, metric_of
from .core.records import ConfusionCount, ModelVersion
from .model import plain

_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ALL_TIME = datetime(1970, 1, 1, tzinfo=timezone.utc)


class RegistrationError(ValueError):
    """The model cannot be registered (or promoted) as asked; the message says why."""


@dataclass(frozen=True)
class Registration:
    """A registered model, whether it is now the champion, and what the user should know."""

    version: ModelVersion
    champion: bool
    logged_rows: int
    warnings: tuple[str, ...] = ()


def logged_metrics(count: ConfusionCount) -> dict[str, float]:
    """Every gate metric of the logged rows: the references the decay trigger compares with, whichever
    metric it watches (none without rows)."""
    if count.in_matrix == 0:
        return {}
    values = {name: metric_of(name, count.array) for name in GATE_METRICS}
    values["accuracy"] = count.accuracy  # of every row, also those left out of the matrix
    return values


def load_model_file(path: str | Path) -> tuple[bytes, Any]:
    """The file's bytes and the object joblib reads from them (or `NotAClassifier`)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:  # a folder, no permission
        raise RegistrationError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data, decode(data, str(path))
    except Exception as exc:  # any unpickling failure means: not a model file we can use
        raise NotAClassifier(f"{path} cannot be read with joblib: {type(exc).__name__}: {exc}") from None


def register_model(
    store: Store, artifacts: ArtifactStorage, model_file: str | Path, *, version: str | None = None,
    champion: bool = False, reason: str | None = None, feature_names: list[str] | None = None,
    reference_accuracy: float | None = None, categorical: list[str] | None = None,
) -> Registration:
    """Register the fitted classifier in `model_file` (joblib), and with `champion` promote it.

    Records its sha256, feature names (its own `feature_names_in_`, or `feature_names`), their kinds
    (categorical where the model's encoders say so or `categorical` names them; the others are numeric
    or boolean as the log shows, on the first run), whether it takes missing values, classes
    (as text, and their type) and a reference accuracy: `reference_accuracy`, else its accuracy on
    the logged rows carrying `version` (the decay trigger compares live accuracy with it). The
    logged rows' accuracy, balanced accuracy and macro-F1 go into its metrics: the references of
    the decay trigger when it watches one of the other metrics (`GATE_METRIC`).
    Promotion is the registry's compare-and-swap: it fails if the champion changes meanwhile.
    """
    data, model = load_model_file(model_file)
    version = version or f"{Path(model_file).stem}-{sha256_hex(data)[:8]}"
    return register_loaded(store, artifacts, data, model, version=version, champion=champion,
                           reason=reason or f"registered from {Path(model_file).name}",
                           feature_names=feature_names, reference_accuracy=reference_accuracy,
                           categorical=categorical)


def register_loaded(
    store: Store, artifacts: ArtifactStorage, data: bytes, model: Any, *, version: str, champion: bool = False,
    reason: str = "registered", feature_names: list[str] | None = None, reference_accuracy: float | None = None,
    categorical: list[str] | None = None,
) -> Registration:
    """`register_model` for a model already in memory, with the bytes it was read from."""
    if not _VERSION.match(version):
        raise RegistrationError(f"version {version!r} must be 1-128 letters, digits, '.', '_' or '-'")
    if reference_accuracy is not None and not 0 <= reference_accuracy <= 1:
        raise RegistrationError(f"reference accuracy {reference_accuracy} is not between 0 and 1")
    description = describe_model(model, feature_names, categorical)
    if (flat := plain(model)) is not model:  # an earlier version's champion: store it without this package's class
        data, _, _ = encode(flat)
    # The file's name carries its sha256: no registration can overwrite another model's file, and a
    # duplicate version is refused by the registry's unique key below.
    stored = artifacts.write(f"models/{version}-{sha256_hex(data)[:12]}.joblib", data)
    count = store.confusion_counts(_ALL_TIME, datetime.now(timezone.utc) + timedelta(days=1), model_version=version)
    warnings = []
    if count.evaluated == 0:
        warnings.append(f"no logged prediction carries model_version {version!r} yet: log its predictions with that "
                        "version" + ("" if reference_accuracy is not None else
                                     ", or give --reference-accuracy, so the decay trigger has a reference"))
    if reference_accuracy is None:
        reference_accuracy = count.accuracy
    record = ModelVersion(version=version, artifact_path=stored.path, sha256=stored.sha256,
                          feature_names=description.feature_names, feature_schema=description.schema,
                          classes=description.classes,
                          class_type=description.class_type, base_size=description.base_size,
                          reference_accuracy=reference_accuracy,
                          metrics={"registered_from_logged_rows": count.evaluated, **logged_metrics(count)})
    try:
        store.register_model_version(record)
    except StoreError as exc:
        if "duplicate key" in str(exc) or "23505" in str(exc):  # registered meanwhile, by someone else
            raise RegistrationError(f"version {version!r} is already registered: choose another --version") from None
        raise
    registered = record
    if champion:
        current = store.champion()
        now = store.promote(version, reason, reference_accuracy,
                            expected_champion=current.version if current else None, check_champion=True)
        if now is None or now.version != version:
            raise RegistrationError(f"{version} is registered but not champion: the champion changed to "
                                    f"{now.version if now else 'none'} meanwhile; promote it with rollback {version}")
        registered = now
    return Registration(registered, champion, count.evaluated, tuple(warnings))
