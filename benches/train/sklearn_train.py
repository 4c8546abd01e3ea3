"""One epoch of logistic regression with scikit-learn on the Parquet table
`train gen` wrote, for comparison with Kiln's `train run`.

usage: python3 benches/train/sklearn_train.py LAKE_DIR [--batch 1024] [--solver sgd|lbfgs]

Reads the table's current snapshot (lake/_kiln/catalog.json), then times
SGDClassifier(loss='log_loss').partial_fit over mini-batches (one pass), or
with --solver lbfgs a default LogisticRegression().fit to convergence,
excluding the Parquet read, and prints rows/s and peak RSS.
"""
import argparse
import json
import pathlib
import resource
import time

import numpy as np
import pyarrow.parquet as pq
from sklearn.linear_model import LogisticRegression, SGDClassifier


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("lake")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--solver", choices=["sgd", "lbfgs"], default="sgd")
    args = parser.parse_args()
    lake = pathlib.Path(args.lake)
    catalog = json.loads((lake / "_kiln" / "catalog.json").read_text())
    snapshot = catalog["tables"]["train_data"]["snapshot"]
    table = pq.read_table(lake / "train_data" / f"v{snapshot}")
    features = [c for c in table.column_names if c != "label"]
    x = np.column_stack([table[c].to_numpy() for c in features]).astype(np.float32)
    y = table["label"].to_numpy()
    start = time.perf_counter()
    if args.solver == "lbfgs":
        model = LogisticRegression().fit(x, y)
        print(f"lbfgs iterations: {model.n_iter_[0]}")
    else:
        model = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.05)
        for i in range(0, len(y), args.batch):
            model.partial_fit(x[i : i + args.batch], y[i : i + args.batch], classes=[0, 1])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    accuracy = model.score(x[:100000], y[:100000])
    print("engine,rows,seconds,rows_per_s,peak_rss_mib,accuracy_first_100k")
    print(f"sklearn_{args.solver},{len(y)},{seconds:.2f},{len(y) / seconds:.0f},{peak:.0f},{accuracy:.4f}")


if __name__ == "__main__":
    main()
