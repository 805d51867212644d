"""Interoperability: Flax linen wrappers (:mod:`.flax`), Flax NNX modules (:mod:`.nnx`) and
PyTorch converters (:mod:`.torch`, which imports torch only when a function needs it)."""
