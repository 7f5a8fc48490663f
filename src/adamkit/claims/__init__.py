"""``adamkit claims``: one small experiment per claim made for Adam, and a report of them.

Each experiment returns a :class:`Claim`: a picture and a one-line verdict carrying the number
it measured. :func:`write_report` runs them and writes ``report.html`` beside the pictures.
"""

from .experiments import EXPERIMENTS, Claim
from .report import write_report

__all__ = ["EXPERIMENTS", "Claim", "write_report"]
