"""``convert sklearn``: a fitted scikit-learn estimator to ONNX through skl2onnx.

Estimators are stored as pickles, and unpickling runs arbitrary code: the
command refuses unless ``--trust-pickle`` says the file comes from someone
trusted. Classifiers get plain tensor outputs (``label``, ``probabilities``;
no ZipMap), which is what a TF Serving client can read.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .common import Check, ConvertError, Progress, convert_and_check

HELP = "scikit-learn estimator (pickle or joblib; needs --trust-pickle) -> ONNX"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="unpickle the file (this runs code from it: only for files you trust)",
    )
    parser.add_argument("--input-name", default="input", help="the input's name (default: input)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: skl2onnx's choice)")


def load_estimator(path: Path, trusted: bool) -> Any:
    if not trusted:
        raise ConvertError(
            f"refusing to unpickle {path}: unpickling runs code from the file. "
            "Pass --trust-pickle if it comes from someone you trust."
        )
    if path.suffix == ".joblib":
        import joblib

        return joblib.load(path)
    with path.open("rb") as f:
        return pickle.load(f)


def run(args: argparse.Namespace, progress: Progress) -> None:
    with progress.step("importing skl2onnx"):
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType

    with progress.step(f"loading {args.source}"):
        estimator = load_estimator(Path(args.source), args.trust_pickle)
        features = getattr(estimator, "n_features_in_", None)
        if features is None:
            raise ConvertError("the estimator is not fitted (it has no n_features_in_)")
    classifier = hasattr(estimator, "predict_proba")
    options = {id(estimator): {"zipmap": False}} if classifier else None

    def write(folder: Path) -> None:
        with progress.step("converting with skl2onnx"):
            types = [(args.input_name, FloatTensorType([None, int(features)]))]
            model = to_onnx(estimator, initial_types=types, options=options, target_opset=args.opset)
            (folder / "model.onnx").write_bytes(model.SerializeToString())

    def source(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feed[args.input_name]
        if classifier:
            return {"label": estimator.predict(x), "probabilities": estimator.predict_proba(x)}
        return {"variable": estimator.predict(x)}

    convert_and_check(args.base_path, Check(source, "onnx", args.samples, args.seed, args.atol), progress, write)
