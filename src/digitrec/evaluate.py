"""Pure metrics over logits and labels: accuracy, confusion matrix, per-class figures, ranked mistakes.

Owns no I/O and no plotting; `report.py` draws what this computes, the CLI prints it.
"""

import numpy as np
import torch

from digitrec import models
from digitrec.data import Split
from digitrec.shapes import CLASSES


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of right answers: the exact ratio of two counts (0.9957 for 9,957 of 10,000), as a float."""
    return int((logits.argmax(1) == labels).sum()) / len(labels)


def string_accuracy(read: list[str], truths: list[str]) -> float:
    """The share of whole strings read exactly right."""
    return sum(r == t for r, t in zip(read, truths, strict=True)) / len(truths)


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, classes: int = CLASSES) -> np.ndarray:
    """counts[true, predicted]."""
    return np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def per_class(confusion: np.ndarray) -> dict[str, list[float]]:
    """Per-class precision, recall (a digit's accuracy) and F1 from a confusion matrix."""
    true_positives = np.diag(confusion).astype(float)
    recall = true_positives / np.maximum(confusion.sum(1), 1)
    precision = true_positives / np.maximum(confusion.sum(0), 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist()}


def test_results(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Everything `digitrec evaluate` reports about a set of predictions."""
    predicted = logits.argmax(1).cpu().numpy()
    truth = labels.cpu().numpy()
    confusion = confusion_matrix(predicted, truth)
    return {
        "images": int(len(truth)),
        "test_accuracy": accuracy(logits, labels),
        "errors": int((predicted != truth).sum()),
        "per_class": per_class(confusion),
        "confusion_matrix": confusion.tolist(),
    }


def ranked_answers(probabilities: torch.Tensor, labels: torch.Tensor, count: int, correct: bool) -> list[dict]:
    """The wrong answers given with the most confidence (`correct=False`), most confident first, or the
    right answers given with the least (`correct=True`), least confident first."""
    confidence, predicted = probabilities.max(1)
    chosen = torch.nonzero((predicted == labels) == correct).flatten()
    ranked = chosen[torch.argsort(confidence[chosen], descending=not correct)][:count]
    return [
        {"index": int(i), "label": int(labels[i]), "predicted": int(predicted[i]), "confidence": float(confidence[i])}
        for i in ranked
    ]


def model_logits(model: torch.nn.Module, split: Split) -> torch.Tensor:
    return models.logits_in_batches(model, split.images)


def ensemble_logits(ensemble: list[torch.nn.Module], split: Split) -> torch.Tensor:
    """Log of the models' mean probability: its argmax and softmax describe the ensemble's answers."""
    return torch.stack([model_logits(model, split).softmax(1) for model in ensemble]).mean(0).log()
