"""fm4npp: a Mamba2 foundation model for sparse detector data, and its scaling studies.

Nothing GPU-only is imported here; subpackages are imported on use.
"""

__version__ = "0.1.0"
