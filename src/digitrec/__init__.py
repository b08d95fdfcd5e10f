"""digitrec: handwritten-digit recognition, from the TensorFlow tutorial's two models to a tool people use."""

__version__ = "0.1.0"
