"""Instrumentors: wrapt patches applied in post-import hooks, one module per library."""
