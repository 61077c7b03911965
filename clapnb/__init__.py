"""clapnb: reproduce and extend the CLAP transfer-learning study for environmental noise monitoring.

Artuso et al., "Enhanced environmental sound event classification through transfer learning with
CLAP model", Forum Acusticum Euronoise 2025. The package is a thin layer of pure functions over
pandas DataFrames and numpy arrays; notebooks and the ``clapnb`` command call the same functions.
"""

__version__ = "0.1.0"
