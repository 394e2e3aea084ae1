"""tensorguess: transfer-learning image classifier for the shell."""

# The one place the version is written: pyproject.toml, the wrappers (the image tag) and the
# tests read it from here.
__version__ = "0.1.0"
