"""What both kinds of twin share, free of ophyd and caproto: the simulated world (the
physics engine driven by the devices' state), the X-ray generator's rules, the motion
constants and the frame file writer (ADCore's NDFileHDF5 layout)."""
