"""Evaluating a ticket: the attack cascade and its caches, randomised tickets, sanity flags, security curves."""
