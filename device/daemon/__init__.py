"""The daemon: the scan loop, its wiring to real or simulated parts, and (to come) systemd.

Never writes pixels anywhere but memory: frames live from the burst to the seal,
then are zeroed.
"""
