"""``adamkit explore``: an interactive page of the Adam family's update rules on the 2-D test
functions.

The page draws; every number on it comes from this package's server, which runs adamkit's
NumPy reference (:mod:`adamkit.reference`) for the settings the page sends.
"""

from .compute import Settings, run
from .server import make_server

__all__ = ["Settings", "make_server", "run"]
