"""The metrics, one module each, over plain arrays (CLIP_benchmark style):

- ``ranks``: the rank of each query's correct item (ties count against the query), top-k;
- ``recall``: Recall@K, median and mean rank, bootstrap intervals;
- ``coco_captions``: BLEU-1..4 and CIDEr-D as the COCO caption evaluation computes them, on
  ``ptb_tokenizer``'s exact PTB tokenization;
- ``clipscore``: CLIP-S and RefCLIP-S;
- ``human_agreement``: Kendall tau of the caption metrics against Flickr8k's human judgments;
- ``run``: all of a pipeline run's metrics from its arrays (the evaluate stage).
"""
