"""The regression gates: the exact gate (bit-identical numbers) and the training gate (seed noise), run by
``bench check``."""
