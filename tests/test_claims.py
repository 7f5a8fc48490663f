"""adamkit claims --quick: the report exists, links its pictures, and every verdict has a number."""

from __future__ import annotations

import re

from adamkit.claims import EXPERIMENTS
from adamkit.claims.experiments import compute_cost, compute_verdict
from adamkit.cli import main


def test_quick_claims_report(tmp_path, capsys):
    out = tmp_path / "claims"
    assert main(["claims", "--quick", "--no-progress", "--out", str(out)]) == 0
    assert "report.html" in capsys.readouterr().out
    page = (out / "report.html").read_text()
    pictures = re.findall(r'<img src="([^"]+)"', page)
    assert len(pictures) == len(EXPERIMENTS)
    for name in pictures:
        assert (out / name).read_bytes().startswith(b"\x89PNG"), name
    verdicts = re.findall(r'<p class="verdict">Measured: (.*?)</p>', page)
    assert len(verdicts) == len(EXPERIMENTS)
    for verdict in verdicts:
        assert re.search(r"\d", verdict), verdict
        assert verdict.split(":")[0] in VERDICTS, verdict


VERDICTS = ("Supported", "Not supported here", "A tie", "Inconclusive")
US = 1e-6


def _samples(adam_us: list[float], sgd_us: list[float]) -> dict[str, list[float]]:
    return {
        "SGD": [t * US for t in sgd_us],
        "Momentum": [20 * US] * len(sgd_us),
        "RMSProp": [25 * US] * len(sgd_us),
        "Adam": [t * US for t in adam_us],
    }


def test_compute_verdict_on_a_quiet_machine():
    verdict = compute_verdict(_samples([27, 28, 27.5, 29] * 5, [18, 18.5, 19, 18] * 5))
    assert verdict.startswith("Supported: an Adam step takes 27.0 µs, 1.50× an SGD step"), verdict
    assert "lower quartiles" in verdict  # the spread is reported


def test_compute_verdict_is_not_swayed_by_occasional_stalls():
    # The loaded machine of the issue: most samples clean, some stalled 10x.
    adam = [27, 28, 272, 27, 430, 28, 27, 28, 300, 27] * 2
    sgd = [19, 200, 19, 19, 19, 410, 19, 19, 20, 19] * 2
    assert compute_verdict(_samples(adam, sgd)).startswith("Supported: ")


def test_compute_verdict_says_inconclusive_when_the_spread_straddles_the_limit():
    # Few clean samples: the fastest Adam is 1.4x the fastest SGD, but most Adam samples
    # are 14x: the samples cannot tell which side of 3x the step lies.
    adam = [27] + [272, 300, 250, 280] * 5
    sgd = [19, 19, 19, 19, 19, 20] * 3 + [21, 22, 19]
    verdict = compute_verdict(_samples(adam, sgd))
    assert verdict.startswith("Inconclusive: "), verdict
    assert re.search(r"between \d+\.\d+× and \d+\.\d+×", verdict)


def test_compute_verdict_not_supported_when_adam_is_clearly_slower():
    verdict = compute_verdict(_samples([100, 101, 102] * 7, [19, 19.5, 20] * 7))
    assert verdict.startswith("Not supported here: "), verdict


def test_compute_claim_interleaves_and_stays_inconclusive_under_a_fake_busy_clock(
    monkeypatch, tmp_path
):
    """compute_cost with a fake clock: Adam's samples mostly stalled, SGD's clean."""
    import adamkit
    from adamkit import bench

    order = []

    def fake_mean_seconds(inner):
        def time_one(step):
            opt = step.__self__
            is_adam = isinstance(opt, adamkit.Adam)
            order.append("Adam" if is_adam else type(opt).__name__)
            stalled = is_adam and sum(o == "Adam" for o in order) > 1
            return (300 if stalled else 27 if is_adam else 19) * US

        return time_one

    monkeypatch.setattr(bench, "mean_seconds", fake_mean_seconds)
    claim = compute_cost(tmp_path, quick=True)
    assert claim.verdict.startswith("Inconclusive: "), claim.verdict
    assert (tmp_path / "compute.png").read_bytes().startswith(b"\x89PNG")
    rounds = [order[i : i + 4] for i in range(0, len(order), 4)]
    assert len(rounds) >= 20 and all(r.count("Adam") == 1 for r in rounds)  # taking turns
