"""Hyper-parameter sweeps: the objective a trial reports, trial failure handling and the trials table."""
