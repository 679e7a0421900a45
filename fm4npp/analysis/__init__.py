"""Reading finished runs back from MLflow, fitting scaling laws and drawing the paper's figures.

The library behind `analysis/*.py` and `fm4npp analysis ...`; the top of the layer order (it
reads what the studies and downstream runs wrote), so nothing else in fm4npp imports it.
"""
