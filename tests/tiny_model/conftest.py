"""The tiny checkpoint's recipe lives under scripts/ (it is not part of the package): make it importable."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
