"""One epoch of an MLP with PyTorch (CPU) on the Parquet table `train gen`
wrote, for comparison with Kiln's `train run --model mlp`.

usage: python3 benches/train/torch_mlp.py LAKE_DIR [--hidden 256] [--batch 128] [--lr 0.01]

Reads the table's current snapshot (lake/_kiln/catalog.json) file by file,
then times one pass of SGD over mini-batches of a Linear-ReLU-Linear network
with softmax cross-entropy (the same network and optimizer as Kiln's
`hidden_units = [256], optimizer = 'sgd'`), excluding the Parquet read, and
prints samples/s and peak RSS.
"""
import argparse
import json
import pathlib
import resource
import time

import numpy as np
import pyarrow.parquet as pq
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("lake")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args()
    lake = pathlib.Path(args.lake)
    catalog = json.loads((lake / "_kiln" / "catalog.json").read_text())
    snapshot = catalog["tables"]["train_data"]["snapshot"]
    xs, ys = [], []
    for path in sorted((lake / "train_data" / f"v{snapshot}").rglob("*.parquet")):
        table = pq.read_table(path)
        features = [c for c in table.column_names if c != "label"]
        xs.append(np.column_stack([table[c].to_numpy() for c in features]).astype(np.float32))
        ys.append(table["label"].to_numpy().astype(np.int64))
    x = torch.from_numpy(np.concatenate(xs))
    y = torch.from_numpy(np.concatenate(ys))
    del xs, ys
    classes = int(y.max()) + 1
    torch.manual_seed(42)
    model = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], args.hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(args.hidden, classes),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    start = time.perf_counter()
    for i in range(0, len(y), args.batch):
        optimizer.zero_grad()
        loss = loss_fn(model(x[i : i + args.batch]), y[i : i + args.batch])
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with torch.no_grad():
        accuracy = (model(x[:100000]).argmax(1) == y[:100000]).float().mean().item()
    print("engine,threads,rows,seconds,samples_per_s,peak_rss_mib,accuracy_first_100k")
    print(
        f"pytorch-{torch.__version__},{torch.get_num_threads()},{len(y)},{seconds:.2f},"
        f"{len(y) / seconds:.0f},{peak:.0f},{accuracy:.4f}"
    )


if __name__ == "__main__":
    main()
