"""Causal checks on the real model (docs/method.md, "Causal checks"): ablate heads, attention
edges, FFN nodes and neurons by zeroing, mean-ablating or patching them in a forward pass of
the unmodified model (`ablate`), and measure how faithful a route is (`verify`).

`targets` is torch-free (the CLI and the server parse targets with it); the other modules run
the model. Nothing here re-implements the forward pass: hooks on the real modules, and a
wrapper around the family's own eager attention function registered in transformers'
attention-function registry (`attention`).
"""
