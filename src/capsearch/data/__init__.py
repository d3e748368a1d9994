"""Flickr8k data: download, parsing, subsets, image loading and a synthetic generator."""
