"""adamkit claims --quick: the report exists, links its pictures, and every verdict has a number."""

from __future__ import annotations

import re

from adamkit.claims import EXPERIMENTS
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
        assert verdict.split(":")[0] in ("Supported", "Not supported here", "A tie"), verdict
