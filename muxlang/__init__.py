"""muxlang: make several small language models answer like one large one (SLM-MUX).

Layers, each its own module: ``lang`` (grammar, parser, AST, loader, checker) → ``ir`` (the
checked spec) → ``compiler`` (declaration and plan graphs) → ``runtime`` (async executor, HTTP
backends) → ``store`` (samples) → ``optimizer`` (tuning) → a tuned spec, as text again.
"""
__version__ = "0.1.0"
