"""edgekd: distill diffusion teachers into compact students and ship them to edge devices."""

__version__ = "0.1.0"
