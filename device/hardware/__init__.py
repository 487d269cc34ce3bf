"""Hardware roles: each a small Protocol, a real adapter and a simulated one.

Real adapters (``picamera.py``, ``gpio.py``) import their Pi-only libraries
inside functions, never at module level, so this package imports anywhere.
"""
