"""Delivering sealed captures: the HTTP session, the retry rules and the in-memory outbox.

The uplink knows sealed bytes, never frames. Nothing here writes to disk.
"""
