"""florence-tune: fine-tune Florence-2 on document question answering and your own images."""

__version__ = "0.1.0"
