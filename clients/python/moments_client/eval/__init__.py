"""Retrieval quality on a labelled set: ``moments eval`` (docs/eval.md).

``labels`` (the set's format and its validation), ``metrics`` (HIT@k, recall@k, AP, nDCG@10, temporal IoU:
pure functions), ``runner`` (ingest the set, search every query through the public client, score it),
``report`` (tables), ``plot`` (the PNG), ``corpus`` (the generated shapes-demo corpus), ``command`` (the CLI).
"""
