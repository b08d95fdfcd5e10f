"""What the digit models read and answer, as numbers every layer shares: a 28x28 image, ten classes.

The ground floor (imports nothing): the models (torch), the tasks' checks of an ONNX file (no torch),
metrics and explanations all take these from here.
"""

IMAGE_SIDE = 28  # px: MNIST's images, and what preprocess makes of a person's
CLASSES = 10  # the ten digits: a digit model's output size; the number reader adds a blank
