"""Calibration: fit a line spec (a twin) from a plant event log, with its fidelity report."""
