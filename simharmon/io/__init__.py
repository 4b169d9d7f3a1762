"""Low-level I/O: pixel conversion, atomic writes, frame sources, video, and drive/log readers and writers.

Imports nothing above it (no runtime, models, front doors, eval, train or data); those import it.
"""
