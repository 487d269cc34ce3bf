"""Calibration: measurements of this scanner (flat fields, ...) that the checks rely on.

Calibration data holds numbers and grey-card images, never a hand.
"""
