"""Evaluation: paired metrics (PSNR, SSIM, L1), FID and KID on Inception-v3 features, the HTML gallery, and the test
runner behind ``test.py``.

Submodules are imported where they are used (``gan_translate.evaluate.metrics`` etc.); importing this package loads
nothing heavy.
"""

__all__ = ["fid", "fid_inception", "gallery", "inception", "metrics", "runner", "scoring", "sources", "validation"]
