"""The reference ingest service: a development and test stand-in for the cloud.

It shares only the protocol code with the scanner side. It keeps nothing on
disk and logs no pixels.
"""
