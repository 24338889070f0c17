"""The paper's peers, rebuilt in PyTorch from their public code (layer sizes, channels and inputs carried over;
no code copied), one module each. M²S²L itself lives in ``m2s2l_edge.models.m2s2l``; both are reached through
``m2s2l_edge.models.registry``.

Every peer exposes ``example_inputs(batch, device, dtype)``: tensors of the input its authors test with (frames,
channels, resolution), so that counting and timing run each model as published.
"""
