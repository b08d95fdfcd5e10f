"""What a saved model says about itself: the config and metrics that a weights file (safetensors) or an
exported ONNX file carries in its metadata, read and checked in one place, and the model-info dict that
a `Recognizer` shows. Imports neither torch nor onnxruntime, so the torch-free ONNX path shares it.
"""

import json

from digitrec.errors import ModelError


def reject_non_finite(constant: str):
    raise ValueError(f"{constant} is not a number JSON allows")


def read(metadata: dict[str, str], where: object) -> tuple[dict, dict]:
    """The (config, metrics) recorded in a model file's string metadata; `where` names the file in errors.

    The config must be a JSON object naming its model; NaN and Infinity are refused, so nothing read
    here can later make a JSON answer invalid.
    """
    try:
        config = json.loads(metadata["config"], parse_constant=reject_non_finite)
        metrics = json.loads(metadata.get("metrics", "{}"), parse_constant=reject_non_finite)
    except (KeyError, ValueError, TypeError):
        raise ModelError(f"{where}: no digitrec model config in the file's metadata") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), str) or not isinstance(metrics, dict):
        raise ModelError(
            f"{where}: the file's metadata is not a digitrec model config (a JSON object naming its model)"
        )
    return config, metrics


def model_info(config: dict, metrics: dict, parameters: int | None, weights: object, runtime: str) -> dict:
    """What `Recognizer.info` holds: the model's name, recipe and size, its recorded metrics, where it came from."""
    return {
        "name": config["model"],
        "recipe": config.get("recipe"),
        "parameters": parameters,
        "metrics": metrics,
        "weights": str(weights),
        "runtime": runtime,
    }
