"""The hypernetwork: its model, its training across sampled tokenizers, and prediction."""
