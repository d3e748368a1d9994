"""The offline demo: generated scenes in Flickr8k's layout, toy CLIP/BLIP models, and a DVC workspace running them.

``capsearch demo`` (``make demo``) and the tests use it; nothing in the pipeline or the search code imports it.
"""
