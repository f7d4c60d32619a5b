"""Profiling a distilled student: image quality (FID, PSNR) and speed."""
