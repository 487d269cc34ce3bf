"""Seeing the hand: presence, the palm region, quality and liveness.

Pure functions of frames: arrays in, frozen dataclasses out, each with a score
and reasons a person can act on. Nothing here touches the camera, the ring, the
clock, the network or the disk (the liveness model's coefficients excepted,
read once from the package).
"""
