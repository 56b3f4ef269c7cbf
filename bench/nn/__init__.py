"""Networks: the architectures, the one masked-layer mechanism every method uses, and evaluation-time copies."""
