"""dlopt autograder: grade notebooks against hidden pytest suites, student code sandboxed."""

__version__ = "0.1.0"
