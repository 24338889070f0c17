"""Training on normal video: the loop with atomic checkpoints and exact resumption (``trainer``), the data order
(``sampler``) and several processes under torchrun (``distributed``)."""
