"""Placeholder, replaced by the analysis layer."""


class FileContext:
    def __init__(self, module, text, path):
        self.module = module
        self.text = text
        self.path = path
