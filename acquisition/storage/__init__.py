"""Where runs live: frame files, run records, derived files, the catalogue and the
calibration files (HDF5/NeXus, JSON).  Imports nothing of the processing or the plans."""
