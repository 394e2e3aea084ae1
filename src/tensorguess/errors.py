"""The one exception type that reaches the user as a sentence instead of a traceback."""


class TensorguessError(Exception):
    """A problem with the user's input (a folder, an image, a model file) and how to fix it."""
