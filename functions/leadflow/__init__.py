"""leadflow: lead qualification and marketing-to-sales handoff."""

__version__ = "0.1.0"
