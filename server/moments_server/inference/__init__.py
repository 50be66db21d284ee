"""Inference core: the exported ONNX towers, their tokenizer, micro-batchers and the embedder."""
