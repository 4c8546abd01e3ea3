"""Writes scikit-learn's bundled data sets with a fixed 80/20 split as CSV,
and what scikit-learn's default models score on each test split, for Kiln's
model-quality tests (crates/kiln-sql/tests/quality.rs).

    python3 tests/quality/sklearn_reference.py tests/quality/data

Output: <name>_train.csv and <name>_test.csv (columns f0..fN-1, label) per
data set, and reference.json: {name: {task, model_type, metric, sklearn}}.
The features are written raw: the tests train with Kiln's default options
and no TRANSFORM, against scikit-learn's defaults on the same raw features.
"""

import json
import os
import sys
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split

SETS = {
    "breast_cancer": (load_breast_cancer, "classification"),
    "wine": (load_wine, "classification"),
    "iris": (load_iris, "classification"),
    "diabetes": (load_diabetes, "regression"),
}


def write_csv(path, x, y, label_format):
    with open(path, "w") as f:
        f.write(",".join([f"f{i}" for i in range(x.shape[1])] + ["label"]) + "\n")
        for row, label in zip(x, y):
            f.write(",".join(repr(float(v)) for v in row) + "," + label_format(label) + "\n")


def main(out):
    os.makedirs(out, exist_ok=True)
    reference = {}
    for name, (load, task) in SETS.items():
        x, y = load(return_X_y=True)
        stratify = y if task == "classification" else None
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=0.2, random_state=0, stratify=stratify
        )
        label_format = (lambda v: str(int(v))) if task == "classification" else (lambda v: repr(float(v)))
        write_csv(os.path.join(out, f"{name}_train.csv"), x_train, y_train, label_format)
        write_csv(os.path.join(out, f"{name}_test.csv"), x_test, y_test, label_format)
        if task == "classification":
            # scikit-learn's default, warnings and all (lbfgs stops at
            # max_iter=100 on raw breast-cancer features).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model = LogisticRegression().fit(x_train, y_train)
            score = accuracy_score(y_test, model.predict(x_test))
            classes = len(np.unique(y))
            model_type = "logistic_regression" if classes == 2 else "softmax_regression"
            reference[name] = {"task": task, "model_type": model_type, "metric": "accuracy", "sklearn": score}
        else:
            model = LinearRegression().fit(x_train, y_train)
            score = r2_score(y_test, model.predict(x_test))
            reference[name] = {"task": task, "model_type": "linear_regression", "metric": "r2", "sklearn": score}
        print(f"{name}: {x.shape[0]} rows x {x.shape[1]} features, sklearn {reference[name]['metric']} {score:.6f}")
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(reference, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/quality/data")
