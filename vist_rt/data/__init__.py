"""Datasets: the HDF5 format, its reader, the simulated retina, converters."""
