"""Embedding-size methods, one module each: its layer, its search helpers, its accounting."""
