"""dataflow.utils: upstream's storage.py (verbatim) plus the registry stub."""
import os

from dataflow import UPSTREAM

__path__.append(os.path.join(UPSTREAM, "utils"))
