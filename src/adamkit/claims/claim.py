"""A claim's record, and the first words of its verdict."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Claim:
    """One claim, what was run, and what it showed."""

    title: str
    claim: str
    method: str
    verdict: str  # one line, with the measured number
    picture: str  # file name beside report.html


def judged(margin: float) -> str:
    """The verdict's first words: the measured margin in the claim's favour (> 0), against
    it (< 0), or none."""
    if margin > 0:
        return "Supported: "
    if margin < 0:
        return "Not supported here: "
    return "A tie: "
