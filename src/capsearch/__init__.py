"""capsearch: caption images with BLIP, embed with CLIP, search by text, measure Recall@K."""

__version__ = "0.1.0"
