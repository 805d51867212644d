"""Interoperability: Flax linen wrappers (:mod:`.flax`) and PyTorch converters (:mod:`.torch`,
which imports torch only when a function needs it)."""
