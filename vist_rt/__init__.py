"""vist-rt: a real-time retina emulator built on the Vi-ST model."""

__version__ = "0.1.0"
