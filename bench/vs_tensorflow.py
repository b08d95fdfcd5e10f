"""Seconds to 99 % test accuracy: the tutorial's own TensorFlow 1 CNN against digitrec's `fast` quick recipe.

Runs the seed tutorial's "Deep MNIST for experts" network as it was written (placeholders, truncated-normal
weights, two 5x5 conv + 2x2 max-pool layers, 1024-unit layer with dropout 0.5, Adam 1e-4, batches of 50),
through `tensorflow.compat.v1`, then `fast` quick through digitrec's training loop, one after the other on
this machine, on the same MNIST split (train = 55,000, test = 10,000). Both evaluate on the test set every
`--tf-eval-every` / `--fast-eval-every` steps to find when they first reach the target; evaluation time is
not counted. Prints the CPU, each side's seconds to the target and their ratio.

TensorFlow is a benchmark-only dependency, never one of digitrec's. Install it into a separate venv and
point this script at it (it then runs the TensorFlow half in that interpreter):

    python3 -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu==2.21.0
    .venv/bin/python bench/vs_tensorflow.py --tensorflow-python /tmp/tf/bin/python
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

TENSORFLOW_HALF = r"""
import json, sys, time
import numpy as np
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()
arrays = np.load(sys.argv[1])
target, eval_every, max_steps, seed = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
train_x, train_y = arrays["train_images"].reshape(-1, 784), np.eye(10, dtype=np.float32)[arrays["train_labels"]]
test_x, test_y = arrays["test_images"].reshape(-1, 784), np.eye(10, dtype=np.float32)[arrays["test_labels"]]
tf.set_random_seed(seed)

# --- the tutorial's code (mnist_deep.py), unchanged but for reading the arrays above ---
def weight_variable(shape):
    return tf.Variable(tf.truncated_normal(shape, stddev=0.1))

def bias_variable(shape):
    return tf.Variable(tf.constant(0.1, shape=shape))

def conv2d(x, W):
    return tf.nn.conv2d(x, W, strides=[1, 1, 1, 1], padding="SAME")

def max_pool_2x2(x):
    return tf.nn.max_pool(x, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding="SAME")

x = tf.placeholder(tf.float32, [None, 784])
y_ = tf.placeholder(tf.float32, [None, 10])
x_image = tf.reshape(x, [-1, 28, 28, 1])
W_conv1, b_conv1 = weight_variable([5, 5, 1, 32]), bias_variable([32])
h_pool1 = max_pool_2x2(tf.nn.relu(conv2d(x_image, W_conv1) + b_conv1))
W_conv2, b_conv2 = weight_variable([5, 5, 32, 64]), bias_variable([64])
h_pool2 = max_pool_2x2(tf.nn.relu(conv2d(h_pool1, W_conv2) + b_conv2))
W_fc1, b_fc1 = weight_variable([7 * 7 * 64, 1024]), bias_variable([1024])
h_fc1 = tf.nn.relu(tf.matmul(tf.reshape(h_pool2, [-1, 7 * 7 * 64]), W_fc1) + b_fc1)
keep_prob = tf.placeholder(tf.float32)
h_fc1_drop = tf.nn.dropout(h_fc1, keep_prob)
W_fc2, b_fc2 = weight_variable([1024, 10]), bias_variable([10])
y_conv = tf.matmul(h_fc1_drop, W_fc2) + b_fc2
cross_entropy = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y_, logits=y_conv))
train_step = tf.train.AdamOptimizer(1e-4).minimize(cross_entropy)
correct = tf.equal(tf.argmax(y_conv, 1), tf.argmax(y_, 1))
accuracy = tf.reduce_mean(tf.cast(correct, tf.float32))
# --- end of the tutorial's code ---

def test_accuracy(session):
    hits = sum(session.run(tf.reduce_sum(tf.cast(correct, tf.float32)),
                           {x: test_x[i:i + 1000], y_: test_y[i:i + 1000], keep_prob: 1.0})
               for i in range(0, len(test_x), 1000))
    return float(hits) / len(test_x)

rng = np.random.default_rng(seed)  # mnist.train.next_batch(50): a shuffled pass over the training set per epoch
order, position = rng.permutation(len(train_x)), 0
seconds, reached, final = 0.0, None, None
with tf.Session() as session:
    session.run(tf.global_variables_initializer())
    for step in range(1, max_steps + 1):
        if position + 50 > len(order):
            order, position = rng.permutation(len(train_x)), 0
        batch = order[position:position + 50]
        position += 50
        started = time.perf_counter()
        session.run(train_step, {x: train_x[batch], y_: train_y[batch], keep_prob: 0.5})
        seconds += time.perf_counter() - started
        if step % eval_every == 0:
            final = test_accuracy(session)
            print(f"  tensorflow step {step:>6}: {seconds:7.1f} s, test {100 * final:.2f}%", file=sys.stderr, flush=True)
            if final >= target:
                reached = {"step": step, "seconds": seconds}
                break
print(json.dumps({"reached": reached, "final_accuracy": final, "train_seconds": seconds, "version": tf.__version__}))
"""


def cpu_description() -> str:
    model, flags = "unknown CPU", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    shown = [flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if flag in flags]
    return f"{model} ({', '.join(shown) or 'no AVX2'})"


def run_tensorflow(python: str, mnist, target: float, eval_every: int, max_steps: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        arrays = Path(folder) / "mnist.npz"
        np.savez(
            arrays,
            train_images=mnist.train.images.numpy(),
            train_labels=mnist.train.labels.numpy(),
            test_images=mnist.test.images.numpy(),
            test_labels=mnist.test.labels.numpy(),
        )
        finished = subprocess.run(
            [python, "-c", TENSORFLOW_HALF, str(arrays), str(target), str(eval_every), str(max_steps), str(seed)],
            stdout=subprocess.PIPE,
            text=True,
            check=False,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
    if finished.returncode != 0:
        sys.exit(
            f"the TensorFlow half failed (exit {finished.returncode}); is tensorflow installed in {python}? "
            "See this script's docstring."
        )
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tensorflow-python",
        default=sys.executable,
        help="a Python interpreter with tensorflow installed (default: this one)",
    )
    parser.add_argument("--target", type=float, default=0.99, help="test accuracy to reach")
    parser.add_argument("--tf-eval-every", type=int, default=250)
    parser.add_argument("--tf-max-steps", type=int, default=20000, help="the tutorial's schedule")
    parser.add_argument("--fast-eval-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from digitrec import data, train
    from speed import time_to_accuracy  # bench/speed.py, beside this script

    mnist = data.load()
    print(f"CPU: {cpu_description()}, torch {torch.__version__} with {torch.get_num_threads()} threads", flush=True)
    print(f"TensorFlow tutorial CNN, test set every {args.tf_eval_every} steps...", flush=True)
    tensorflow = run_tensorflow(
        args.tensorflow_python, mnist, args.target, args.tf_eval_every, args.tf_max_steps, args.seed
    )
    config = train.resolve_config("fast", "quick", seed=args.seed)
    precision = train.choose_precision(config.precision, torch.device("cpu"))  # what --precision auto uses here
    print(f"digitrec fast quick (precision {precision}), test set every {args.fast_eval_every} steps...", flush=True)
    fast = time_to_accuracy(config, mnist, torch.device("cpu"), args.fast_eval_every, args.target, True)

    print(f"\n{'':<32}{'s to ' + format(args.target, '.1%'):>12}{'at step':>9}{'last test acc':>15}")
    for name, result in (
        (f"TensorFlow {tensorflow['version']} tutorial CNN", tensorflow),
        ("digitrec fast quick", fast),
    ):
        reached = result["reached"]
        print(
            f"{name:<32}{reached['seconds'] if reached else float('nan'):>12.1f}{reached['step'] if reached else '-':>9}"
            f"{100 * result['final_accuracy']:>14.2f}%"
        )
    if tensorflow["reached"] and fast["reached"]:
        print(
            f"fast quick reaches {args.target:.1%} {tensorflow['reached']['seconds'] / fast['reached']['seconds']:.1f}x "
            "sooner than the tutorial's own TensorFlow code"
        )
    else:
        print("ratio: a side never reached the target")


if __name__ == "__main__":
    main()
