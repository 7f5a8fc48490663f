"""CPU benchmark: adamkit vs torch.optim Adam steps, interleaved; prints a table, writes JSON.

Same as ``adamkit bench``; run with ``.venv/bin/python benchmarks/cpu.py [--rounds N]``.
"""

import sys

from adamkit.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
