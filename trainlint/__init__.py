"""trainlint: a static linter for PyTorch training code.

The linter never imports torch and never imports or runs the code it checks.
"""

__version__ = "0.1.0"
