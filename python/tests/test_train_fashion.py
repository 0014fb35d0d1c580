"""Trains examples/mlp.sg on Fashion-MNIST for one epoch from NumPy arrays,
as `stepc demo` does (Adam, lr 1e-3, batch 128, shuffled with a fixed seed)."""
import gzip
import os
import time

import numpy as np
import pytest

import stepc

FASHION = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


def read_idx(images_file, labels_file):
    with gzip.open(os.path.join(FASHION, images_file)) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16)
    with gzip.open(os.path.join(FASHION, labels_file)) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return (images.reshape(len(labels), 784).astype(np.float32) / 255,
            labels.astype(np.int32))


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="dataset-fashion-mnist is not installed")
def test_mlp_trains_to_83_5_percent_in_one_epoch():
    train_x, train_y = read_idx("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    test_x, test_y = read_idx("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    model = stepc.load("examples/mlp.sg")
    batch = model.inputs["x"][1][0]

    start = time.perf_counter()
    step = stepc.compile(model.train_step(loss="loss", optimizer="adam", lr=1e-3))
    order = np.random.default_rng(0).permutation(len(train_y))
    for first in range(0, len(order) - batch + 1, batch):  # the partial last batch is dropped
        rows = order[first:first + batch]
        loss = step(x=train_x[rows], y=train_y[rows])["loss"]
    seconds = time.perf_counter() - start
    assert np.isfinite(loss)

    # The same model with its logits as an output, with the trained weights.
    evaluator = stepc.compile(stepc.parse(
        model.text.replace("output loss = %loss", "output loss = %loss\n  output logits = %logits"),
        "mlp_eval.sg"))
    evaluator.set_params({k: v for k, v in step.params().items() if k in model.params})
    right = 0
    for first in range(0, len(test_y), batch):
        x = test_x[first:first + batch]
        n = len(x)
        padded = np.zeros((batch, 784), np.float32)
        padded[:n] = x
        logits = evaluator(x=padded, y=np.zeros(batch, np.int32))["logits"]
        right += int((logits[:n].argmax(axis=1) == test_y[first:first + n]).sum())
    accuracy = right / len(test_y)
    print(f"Fashion-MNIST, mlp.sg, 1 epoch from NumPy: {100 * accuracy:.2f}% test accuracy, "
          f"training {seconds:.1f} s")
    assert accuracy >= 0.835
