"""What the digit models answer, as a number every layer shares: ten classes.

The ground floor (imports nothing): the models (torch), the tasks' checks of an ONNX file (no torch),
metrics and explanations all take these from here.
"""

CLASSES = 10  # the ten digits: a digit model's output size; the number reader adds a blank
