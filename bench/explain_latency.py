"""The Inside view's server time for one image, and what the extra ONNX outputs cost plain prediction.

Inside view: `web.explain.explanation_out` plus its JSON encoding (what `POST /api/explain` runs between
reading the body and sending the answer) on 280x280 canvas PNGs of 20 test digits, with the recognizer
as `digitrec serve` loads it (one inference thread per request, the calling one): wall-clock time and
the thread's CPU time (which other processes on a busy machine inflate less), and `Recognizer.predict`
on the same PNGs for scale. Prediction: `Recognizer.predict` on the
same PNGs. Then plain prediction (inference on one preprocessed image, and `Recognizer.predict` on a PNG,
what /api/predict runs) with the bundled model.onnx against a copy of it cut down to its `logits`
output, run alternately: what the extra outputs cost prediction. Each figure is the median of 5 timed repeats
after a warm-up. Models: the bundled default on onnxruntime; with torch installed also the bundled
tutorial `cnn` on torch and exported to ONNX, and a tutorial `softmax` trained for the purpose (~1 s).

    python bench/explain_latency.py
"""

import argparse
import importlib.util
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from digitrec import data, runtime, tasks
from digitrec.files import BUNDLED_DIR, BUNDLED_ONNX
from digitrec.recognizer import Recognizer
from digitrec.web.explain import explanation_out

DIGITS = 20


def median_seconds(work, repeats: int = 5, clock=time.perf_counter) -> float:
    work()  # warm-up
    timings = []
    for _ in range(repeats):
        started = clock()
        work()
        timings.append(clock() - started)
    return statistics.median(timings)


def canvas_pngs(images: np.ndarray) -> list[bytes]:
    """Test digits as the page sends them: black strokes on a white 280x280 RGBA canvas."""
    pngs = []
    for digit in (images * 255).astype(np.uint8):
        buffer = io.BytesIO()
        Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BILINEAR).convert("RGBA").save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    return pngs


def inside_row(label: str, recognizer: Recognizer, pngs: list[bytes]) -> None:
    def explain_all():
        return [explanation_out(recognizer, png).model_dump_json() for png in pngs]

    wall = median_seconds(explain_all) / len(pngs)
    cpu = median_seconds(explain_all, clock=time.thread_time) / len(pngs)  # one inference thread: this one
    predict = median_seconds(lambda: [recognizer.predict(png) for png in pngs]) / len(pngs)
    size = len(explain_all()[0])
    print(f"{label:<30}{1000 * wall:>14.1f}{1000 * cpu:>16.1f}{1000 * predict:>13.2f}{size / 1024:>10.0f}")


def logits_only(path: Path) -> bytes:
    import onnx

    model = onnx.load(str(path))
    kept = [output for output in model.graph.output if output.name == "logits"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    return model.SerializeToString()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", type=int, default=DIGITS, help="canvas images of test digits timed")
    digits = parser.parse_args().digits
    test = data.load().test
    pngs = canvas_pngs(test.images[:digits, 0].numpy())
    print(f"{'model, runtime (1 thread)':<30}{'explain ms':>14}{'explain CPU ms':>16}{'predict ms':>13}{'JSON kB':>10}")
    inside_row("default (fast), onnxruntime", Recognizer.load(BUNDLED_ONNX, threads=1), pngs)
    if importlib.util.find_spec("torch") is not None:
        import torch

        from digitrec import train
        from digitrec.deploy import export_onnx

        with tempfile.TemporaryDirectory() as folder:
            cnn_onnx = Path(folder) / "cnn.onnx"
            export_onnx(BUNDLED_DIR / "cnn", cnn_onnx)
            inside_row("cnn, torch", Recognizer.load(BUNDLED_DIR / "cnn", threads=1), pngs)
            inside_row("cnn, onnxruntime", Recognizer.load(cnn_onnx, threads=1), pngs)
            softmax_run = Path(folder) / "softmax"
            train.train(
                train.resolve_config("softmax"),
                data.load(),
                torch.device("cpu"),
                softmax_run,
                print_line=lambda line: None,
                show_progress=False,
            )
            export_onnx(softmax_run, Path(folder) / "softmax.onnx")
            inside_row("softmax, onnxruntime", Recognizer.load(Path(folder) / "softmax.onnx", threads=1), pngs)

    one = test.images[:1].numpy()
    with_outputs = Recognizer.load(BUNDLED_ONNX, threads=1)
    without = Recognizer(runtime.from_source(logits_only(BUNDLED_ONNX), "logits only", tasks.DIGITS, threads=1))
    print("\nplain prediction with the bundled model.onnx, 1 thread, in ms (5 rounds, the two files alternating):")
    works = {
        "inference, one preprocessed image": lambda recognizer: [recognizer.logits(one) for _ in range(500)],
        "Recognizer.predict, one canvas PNG": lambda recognizer: [recognizer.predict(png) for png in pngs * 5],
    }
    for work_name, work in works.items():
        calls = len(work(without))
        rounds = {"with the Inside outputs": [], "logits output only": []}
        for _ in range(5):
            for name, recognizer in (("with the Inside outputs", with_outputs), ("logits output only", without)):
                rounds[name].append(
                    1000 * median_seconds(lambda work=work, recognizer=recognizer: work(recognizer)) / calls
                )
        for name, values in rounds.items():
            print(
                f"  {work_name:<36}{name:<26}"
                + "  ".join(f"{value:.3f}" for value in values)
                + f"   median {statistics.median(values):.3f}"
            )


if __name__ == "__main__":
    main()
