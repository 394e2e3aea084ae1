"""tensorguess: transfer-learning image classifier for the shell."""

__version__ = "0.1.0"
