"""Synopsis engine: documents, windowing, generation, training and models, with no Qt."""

__version__ = "0.1.0"
