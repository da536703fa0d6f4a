"""noisecli: does noise injection help my model, which kind, and how much?"""

__version__ = "0.1.0"
