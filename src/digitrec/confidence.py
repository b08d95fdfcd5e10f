"""Scores -> a calibrated confidence and an `unsure` flag: the one place that decides both, for the CLI,
the Python API, the web API and the page.

A model's raw softmax is over-confident on writing unlike its training data and under-confident on
easy digits once trained with label smoothing. Temperature scaling (Guo et al. 2017) divides the logits
by one number T, fitted on validation data to minimise the negative log-likelihood; it keeps every
argmax and ranking and makes the top probability mean what it says (expected calibration error, ECE).
A two-way score (a number reading: right or wrong) may also need a shift of its log-odds, which one T
cannot give: Platt scaling (Platt 1999) fits T and that `bias` together (`fit_platt`).
The `unsure` threshold is then chosen on the same validation readings as the highest confidence that
still flags at most `FLAG_RIGHT_CHOSEN` of the right ones, and its catch of wrong ones is recorded (the issue's targets: >= 90 % of wrong readings flagged, <= 5 % of right ones).

T, the bias (two-way scores only; 0 for the digit models) and the threshold live in a small JSON file
beside the model (`calibration.json` in its run folder or next to its .safetensors/.onnx file; the
bundled default has one). A missing or damaged file means the
uncalibrated scores (T = 1) and the old threshold `UNCALIBRATED_UNSURE_BELOW`, with one warning
(`CalibrationWarning`) per file, never an error.

Owns: the calibration's file, fitting T (and Platt's bias), choosing the threshold, ECE and the
reliability and coverage-against-error tables. Not owned here: which readings it is fitted on (`digitrec calibrate`,
see calibrate.py), nor the models (recognizer.py). Imports only numpy, so the torch-free path shares it.
A number's confidence (reading.py) builds on the same `Calibration`, in the number reader's own file.
"""

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitrec.files import write_atomic

CALIBRATION_FILE = "calibration.json"
VERSION = 1
UNCALIBRATED_UNSURE_BELOW = 0.80  # the threshold on the raw top probability before calibration existed
CATCH_AT_LEAST = 0.90  # share of wrong readings the unsure flag must catch (on validation when chosen)
FLAG_RIGHT_AT_MOST = 0.05  # share of right readings it may flag
# the share of right validation readings the chosen threshold flags: half a point under the target, because
# a threshold chosen at exactly 5 % on 5,000 validation digits flagged 5.2 % of the test set's right ones
FLAG_RIGHT_CHOSEN = 0.045
ECE_BINS = 15  # equal-width confidence bins for the expected calibration error (Guo et al.'s choice)
COVERAGES = (1.00, 0.99, 0.97, 0.95)  # shares of readings accepted in the coverage-against-error table
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0  # the search range for T (a file outside it is damaged)
MAX_BIAS = 20.0  # a log-odds shift beyond this either way says a file is damaged


class CalibrationWarning(UserWarning):
    """A model is used without its calibration (missing or damaged file): uncalibrated scores."""


@dataclass(frozen=True)
class Calibration:
    temperature: float = 1.0  # logits are divided by this before the softmax
    unsure_below: float = UNCALIBRATED_UNSURE_BELOW  # a calibrated confidence below this is flagged unsure
    calibrated: bool = False  # False: the fallback, no file was read
    record: dict = field(default_factory=dict)  # how it was fitted and what it measured (validation figures)
    bias: float = 0.0  # added to the first of two logits (right, wrong) after dividing by T: their log-odds shift

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """(N, C) logits -> (N, C) calibrated probabilities, float64."""
        scaled = np.asarray(logits, dtype=np.float64) / self.temperature
        if self.bias and scaled.shape[1] == 2:  # Platt's shift is for two-way scores only
            scaled[:, 0] += self.bias
        shifted = np.exp(scaled - scaled.max(1, keepdims=True))
        return shifted / shifted.sum(1, keepdims=True)

    def unsure(self, confidence: float | np.ndarray) -> bool | np.ndarray:
        """Whether a (calibrated) confidence is too low to be trusted without a look."""
        flagged = np.asarray(confidence) < self.unsure_below
        return bool(flagged) if flagged.ndim == 0 else flagged

    def as_json(self) -> str:
        content = {
            "version": VERSION,
            "temperature": self.temperature,
            "bias": self.bias,
            "unsure_below": self.unsure_below,
            "record": self.record,
        }
        return json.dumps(content, indent=2) + "\n"


UNCALIBRATED = Calibration()


def calibration_path(model_path: str | Path) -> Path:
    """Where the calibration of the model at `model_path` (a run folder or a model file) lives."""
    path = Path(model_path)
    return path / CALIBRATION_FILE if path.is_dir() else path.parent / CALIBRATION_FILE


def load(model_path: str | Path) -> Calibration:
    """The calibration beside the model at `model_path`; the uncalibrated fallback, with one
    `CalibrationWarning` naming the file and the reason, when it is missing or damaged."""
    path = calibration_path(model_path)
    try:
        return parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        reason = "missing (run `digitrec calibrate --model ...` to make it)"
    except (OSError, UnicodeDecodeError) as error:
        reason = f"unreadable ({getattr(error, 'strerror', None) or error})"
    except (ValueError, TypeError) as error:
        reason = f"damaged ({error})"
    warnings.warn(
        f"{path}: calibration {reason}; using uncalibrated confidences (unsure below {UNCALIBRATED_UNSURE_BELOW})",
        CalibrationWarning,
        stacklevel=2,
    )
    return UNCALIBRATED


def parse(text: str) -> Calibration:
    """A calibration file's content; ValueError or TypeError saying what is wrong with it."""
    content = json.loads(text, parse_constant=lambda constant: float("nan"))  # NaN is caught below
    if not isinstance(content, dict):
        raise TypeError("not a JSON object")
    if content.get("version") != VERSION:
        raise ValueError(f"version {content.get('version')!r}, expected {VERSION}")
    temperature, unsure_below = content.get("temperature"), content.get("unsure_below")
    if not is_number(temperature) or not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:
        raise ValueError(f"temperature {temperature!r} is not a number in {MIN_TEMPERATURE}..{MAX_TEMPERATURE}")
    if not is_number(unsure_below) or not 0 <= unsure_below <= 1:
        raise ValueError(f"unsure_below {unsure_below!r} is not a number in 0..1")
    bias = content.get("bias", 0.0)  # files written before Platt scaling have none
    if not is_number(bias) or not -MAX_BIAS <= bias <= MAX_BIAS:
        raise ValueError(f"bias {bias!r} is not a number in {-MAX_BIAS}..{MAX_BIAS}")
    record = content.get("record", {})
    return Calibration(
        float(temperature), float(unsure_below), True, record if isinstance(record, dict) else {}, float(bias)
    )


def is_number(value) -> bool:
    """A JSON number (true and false are ints to Python, not numbers to a calibration)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def save(calibration: Calibration, model_path: str | Path) -> Path:
    """Write `calibration` beside the model at `model_path`; returns the file's path."""
    path = calibration_path(model_path)
    write_atomic(path, calibration.as_json())
    return path


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in MIN_TEMPERATURE..MAX_TEMPERATURE minimising the mean negative log-likelihood of `labels`
    under softmax(logits / T): a golden-section search on log T (the NLL is convex in 1/T)."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)

    def nll(log_t: float) -> float:
        scaled = logits / math.exp(log_t)
        top = scaled.max(1, keepdims=True)
        log_z = np.log(np.exp(scaled - top).sum(1)) + top[:, 0]
        return float(np.mean(log_z - scaled[np.arange(len(labels)), labels]))

    low, high = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    f_a, f_b = nll(a), nll(b)
    while high - low > 1e-5:
        if f_a < f_b:
            high, b, f_b = b, a, f_a
            a = high - ratio * (high - low)
            f_a = nll(a)
        else:
            low, a, f_a = a, b, f_b
            b = low + ratio * (high - low)
            f_b = nll(b)
    return round(math.exp((low + high) / 2), 5)


def fit_platt(confidences: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    """(T, bias) such that sigmoid(logit(confidence) / T + bias) best predicts `correct` (the mean negative
    log-likelihood, convex in (1/T, bias): Newton's method, each step halved until the likelihood improves),
    T kept within MIN_TEMPERATURE..MAX_TEMPERATURE and the bias within ±MAX_BIAS (readings all right, or all
    wrong, would send it to infinity)."""
    q = np.asarray(confidences, dtype=np.float64)
    if not len(q) or not np.isfinite(q).all():
        raise ValueError("Platt scaling needs at least one reading, and finite confidences")
    q = np.clip(q, 1e-12, 1 - 1e-12)
    z, y = np.log(q) - np.log1p(-q), np.asarray(correct, dtype=np.float64)
    features = np.stack([z, np.ones_like(z)], 1)

    def nll(weights: np.ndarray) -> float:
        margin = features @ weights
        return float(np.mean(np.logaddexp(0, margin) - y * margin))

    weights = np.array([1.0, 0.0])  # T = 1, no shift: the raw confidences
    loss = nll(weights)
    for _ in range(100):
        p = 0.5 * (1 + np.tanh(features @ weights / 2))  # the sigmoid, without overflow
        gradient = features.T @ (p - y) / len(y)
        hessian = (features * (p * (1 - p))[:, None]).T @ features / len(y) + 1e-12 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        while (new_loss := nll(weights - step)) > loss and np.abs(step).max() > 1e-12:
            step /= 2
        if loss - new_loss < 1e-12:
            break
        weights, loss = weights - step, new_loss
    scale = min(max(weights[0], 1 / MAX_TEMPERATURE), 1 / MIN_TEMPERATURE)
    return round(float(1 / scale), 5), round(min(max(float(weights[1]), -MAX_BIAS), MAX_BIAS), 5)


def choose_unsure_below(
    confidences: np.ndarray, correct: np.ndarray, flag_right_at_most: float = FLAG_RIGHT_CHOSEN
) -> float:
    """The highest threshold that flags at most `flag_right_at_most` of the right readings (confidence
    strictly below it is unsure): catching as many wrong ones as that allows."""
    right = np.sort(np.asarray(confidences)[np.asarray(correct, bool)])
    if not len(right):
        return UNCALIBRATED_UNSURE_BELOW
    allowed = math.floor(flag_right_at_most * len(right))  # right readings that may fall below the threshold
    return float(right[allowed])  # right[:allowed] are below it, right[allowed] itself is not


def flag_rates(confidences: np.ndarray, correct: np.ndarray, unsure_below: float) -> dict:
    """What a threshold does: the share of wrong readings it flags and of right ones."""
    confidences, correct = np.asarray(confidences), np.asarray(correct, bool)
    flagged = confidences < unsure_below
    return {
        "wrong_flagged": float(flagged[~correct].mean()) if (~correct).any() else 1.0,
        "right_flagged": float(flagged[correct].mean()) if correct.any() else 0.0,
        "readings": len(correct),
        "wrong": int((~correct).sum()),
    }


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over equal-width confidence bins of (share of readings in it) x |accuracy - mean confidence|."""
    return float(
        sum(row["count"] * abs(row["accuracy"] - row["confidence"]) for row in reliability(confidences, correct, bins))
        / max(len(confidences), 1)
    )


def reliability(confidences: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per non-empty confidence bin (lower edge included, the top one closed): count, mean confidence, accuracy."""
    confidences, correct = np.asarray(confidences, dtype=np.float64), np.asarray(correct, bool)
    index = np.minimum((confidences * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        if inside.any():
            rows.append(
                {
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "count": int(inside.sum()),
                    "confidence": float(confidences[inside].mean()),
                    "accuracy": float(correct[inside].mean()),
                }
            )
    return rows


def coverage_table(confidences: np.ndarray, correct: np.ndarray, coverages=COVERAGES) -> list[dict]:
    """Selective prediction: keeping the most confident `coverage` share of readings, their error rate
    and the confidence of the least confident one kept."""
    confidences, correct = np.asarray(confidences, dtype=np.float64), np.asarray(correct, bool)
    order = np.argsort(-confidences, kind="stable")
    rows = []
    for coverage in coverages:
        kept = order[: max(1, round(coverage * len(order)))]
        rows.append(
            {
                "coverage": coverage,
                "error": float(1 - correct[kept].mean()),
                "confidence_at_least": float(confidences[kept].min()),
            }
        )
    return rows


def fit(logits: np.ndarray, labels: np.ndarray, record: dict | None = None) -> Calibration:
    """A calibration fitted on validation readings: T by likelihood, then the threshold; its record holds
    the validation figures (ECE before and after, the flag rates) and whatever `record` adds."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    temperature = fit_temperature(logits, labels)
    raw, calibrated = UNCALIBRATED.probabilities(logits), Calibration(temperature).probabilities(logits)
    correct = calibrated.argmax(1) == labels
    confidences = calibrated.max(1)
    unsure_below = math.floor(choose_unsure_below(confidences, correct) * 1e6) / 1e6  # rounded down: flags no more
    measured = {
        "readings": len(labels),
        "accuracy": float(correct.mean()),
        "ece_uncalibrated": expected_calibration_error(raw.max(1), correct),
        "ece": expected_calibration_error(confidences, correct),
        **flag_rates(confidences, correct, unsure_below),
    }
    return Calibration(temperature, unsure_below, True, {**(record or {}), "validation": measured})
