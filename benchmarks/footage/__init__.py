"""Validation footage for the benchmarks and tests, not part of the installed package: the vtest.avi set builder
(``vtest``) and the model-free detectors scored beside the model (``model_free``)."""
