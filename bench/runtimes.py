"""The bundled model on torch and on onnxruntime: batched throughput, one-image latency, same answers.

Both runtimes run the same bundled model through `Recognizer` (the weights file on torch, its `model.onnx`
copy on onnxruntime). Throughput: the 10,000 test images in batches of 256; latency: one preprocessed
image at a time. Each figure is the median of 5 timed repeats after a warm-up.

    python bench/runtimes.py
"""

import argparse
import statistics
import time

import numpy as np

from digitrec import data
from digitrec.files import BUNDLED_MODEL, BUNDLED_ONNX
from digitrec.recognizer import BATCH_SIZE, Recognizer


def median_seconds(work, repeats: int = 5) -> float:
    work()  # warm-up
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats after the warm-up (the median is shown)")
    repeats = parser.parse_args().repeats
    test = data.load().test
    images, labels = test.images.numpy(), test.labels.numpy()
    one = images[:1]
    print(f"{'runtime':<14}{'images/s (batches of 256)':>27}{'one image, ms':>15}{'test accuracy':>15}")
    answers = {}
    for runtime, path in (("torch", BUNDLED_MODEL), ("onnxruntime", BUNDLED_ONNX)):
        recognizer = Recognizer.load(path)

        def all_logits(recognizer=recognizer):
            return np.concatenate(
                [recognizer.logits(images[i : i + BATCH_SIZE]) for i in range(0, len(images), BATCH_SIZE)]
            )

        batched = median_seconds(all_logits, repeats)
        single = (
            median_seconds(lambda recognizer=recognizer: [recognizer.logits(one) for _ in range(200)], repeats) / 200
        )
        answers[runtime] = all_logits().argmax(1)
        accuracy = (answers[runtime] == labels).mean()
        print(f"{runtime:<14}{len(images) / batched:>27,.0f}{1000 * single:>15.3f}{100 * accuracy:>14.2f}%")
    print(f"same digit on {(answers['torch'] == answers['onnxruntime']).sum()} of {len(images)} test images")


if __name__ == "__main__":
    main()
