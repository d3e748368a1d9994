"""BLIP captioning and CLIP embedding wrappers, loaded safely (safetensors only, no remote code)."""
