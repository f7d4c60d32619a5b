"""Compression of a trained run: structured pruning + distillation recovery (prune.py, recover.py), quantization
(quantize.py), and the ``edgekd compress`` orchestration that writes derived run directories (run.py)."""
