"""The rows `predict` and `read` give: one dict per input file, what `--json` prints and `--out` writes.

    results = predict_results(recognizer, inputs)       # Prediction or ImageError, in the inputs' order
    rows = [prediction_row(name, result) for (name, _), result in zip(inputs, results)]
    rows = make_rows("read", recognizer, inputs, reader=reader)  # the same in one call, for a batch of files

A file that cannot be read gives an error row in its place (every value None but its path and error),
so one bad file never stops the rest. Every engine that runs batches (this process, a Ray worker: see
scale.py) calls `make_rows`, so the rows are the same wherever they are made. `ROW_FIELDS` and
`arrow_schema` say their fields and types once, for the Parquet output. Not owned here: finding the
input files (inputs.py), the models (recognizer, reading).
"""

from collections.abc import Sequence

from digitrec.errors import DigitrecError, ImageError
from digitrec.preprocess import Source
from digitrec.reading import Reading, read
from digitrec.recognizer import Prediction, Recognizer
from digitrec.runtime import Runtime

ROUNDED_TO = 6  # decimals of a prediction row's probabilities (a float32 model's are good to about 7)
TASKS = ("predict", "read")
ROW_FIELDS = {
    "predict": ("path", "digit", "confidence", "unsure", "probabilities", "error"),
    "read": ("path", "text", "confidence", "unsure", "digits", "error"),
}

Input = tuple[str, "Source | ImageError"]  # a name and its image, or what went wrong finding it


def prediction_row(name: str, result: Prediction | ImageError) -> dict:
    if isinstance(result, ImageError):
        return {
            "path": name,
            "digit": None,
            "confidence": None,
            "unsure": None,
            "probabilities": None,
            "error": str(result),
        }
    return {
        "path": name,
        "digit": result.digit,
        "confidence": round(result.confidence, ROUNDED_TO),
        "unsure": result.unsure,
        "probabilities": [round(p, ROUNDED_TO) for p in result.probabilities],
        "error": None,
    }


def reading_row(name: str, result: Reading | ImageError) -> dict:
    if isinstance(result, ImageError):
        return {"path": name, "text": None, "confidence": None, "unsure": None, "digits": None, "error": str(result)}
    return {"path": name, **result.as_dict(), "error": None}


def predict_results(recognizer: Recognizer, inputs: Sequence[Input], workers: int | None = None) -> list:
    """`Recognizer.predict_many` over the readable inputs, the others' errors kept in their places."""
    readable = [(name, source) for name, source in inputs if not isinstance(source, ImageError)]
    predicted = iter(recognizer.predict_many(readable, workers=workers) if readable else [])
    return [source if isinstance(source, ImageError) else next(predicted) for _, source in inputs]


def read_results(recognizer: Recognizer, reader: Runtime, inputs: Sequence[Input]) -> list:
    """`reading.read` on each input: its `Reading`, or the `ImageError` saying why there is none."""
    results = []
    for name, source in inputs:
        if isinstance(source, ImageError):
            results.append(source)
            continue
        try:
            results.append(read(reader, recognizer, source, name))
        except ImageError as error:
            results.append(error)
        except DigitrecError:  # the model's fault (a NaN answer), not this file's: stop
            raise
        except Exception as error:  # noqa: BLE001  (whatever else went wrong is still this file's failure alone)
            results.append(ImageError(f"{name}: {type(error).__name__}: {error}"))
    return results


def results_of(
    task: str,
    recognizer: Recognizer,
    inputs: Sequence[Input],
    workers: int | None = None,
    reader: Runtime | None = None,
) -> list:
    """`predict_results` or (with the number `reader`) `read_results`, by `task` ("predict" or "read")."""
    return (
        predict_results(recognizer, inputs, workers) if task == "predict" else read_results(recognizer, reader, inputs)
    )


def row_of(task: str, name: str, result) -> dict:
    return prediction_row(name, result) if task == "predict" else reading_row(name, result)


def make_rows(
    task: str,
    recognizer: Recognizer,
    inputs: Sequence[Input],
    workers: int | None = None,
    reader: Runtime | None = None,
) -> list[dict]:
    """The rows of `task` for `inputs`, in their order."""
    results = results_of(task, recognizer, inputs, workers, reader)
    return [row_of(task, name, result) for (name, _), result in zip(inputs, results)]


def arrow_schema(task: str):
    """The rows' types as a pyarrow schema (fields in `ROW_FIELDS` order), so that every Parquet part of
    a job agrees, whichever of its batches held only error rows."""
    import pyarrow as pa

    if task == "predict":
        types = [pa.string(), pa.int64(), pa.float64(), pa.bool_(), pa.list_(pa.float64()), pa.string()]
    else:
        alternative = pa.struct([("digit", pa.int64()), ("confidence", pa.float64())])
        digit = pa.struct(
            [
                ("digit", pa.int64()),
                ("confidence", pa.float64()),
                ("unsure", pa.bool_()),
                ("box", pa.list_(pa.int64())),
                ("alternatives", pa.list_(alternative)),
            ]
        )
        types = [pa.string(), pa.string(), pa.float64(), pa.bool_(), pa.list_(digit), pa.string()]
    return pa.schema(list(zip(ROW_FIELDS[task], types)))
