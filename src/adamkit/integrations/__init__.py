"""Callbacks that attach a :class:`~adamkit.diagnostics.Recorder` to training stacks.

Each module imports its stack when imported (``adamkit.integrations.hf`` needs transformers,
``adamkit.integrations.lightning`` needs lightning); ``import adamkit`` imports neither.
"""
