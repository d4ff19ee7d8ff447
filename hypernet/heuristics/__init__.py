"""Embedding predictors, one per file, each a pure function of tensors (see `mixture`)."""
