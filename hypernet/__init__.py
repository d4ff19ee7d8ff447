"""tokengraft's library: give a pretrained language model a new tokenizer, zero-shot."""
