"""palm-scanner: open firmware for point-of-sale NIR palm scanners.

The package never writes an image anywhere but memory from the daemon; offline
tools for technicians may read (and the simulator may render) images a person
asks for.
"""

__version__ = "0.1.0"
