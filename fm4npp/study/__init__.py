"""Scaling studies (Figure 5): presets and grids, the Tune trial, the study driver.

Part of the installed package, so `fm4npp study model_scaling` (or the thin
`studies/<kind>.py` scripts of a checkout) runs from any directory and a non-editable install.
"""
