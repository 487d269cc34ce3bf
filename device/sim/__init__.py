"""The simulated scanner: a physical scene model, a camera and a ring like the real ones.

Frames are rendered from geometry and light (LED sectors at known positions,
inverse-square fall-off, Lambertian shading, sub-surface blur, defocus, motion,
sensor noise), never drawn by hand, so quality and liveness checks developed on
them meet the same physics as on a Pi. Nothing downstream knows it is simulated.
The simulator's output is synthetic, not biometric.
"""
