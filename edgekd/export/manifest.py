"""Kept so existing imports work: the manifest schema lives in edgekd/manifest.py (below export and runtime)."""

from edgekd.manifest import *  # noqa: F401,F403
from edgekd.manifest import (READABLE_VERSIONS, Manifest, ManifestV2, ModelFile, NoiseSpec, OutputSpec,  # noqa: F401
                             ParitySpec, SamplingSpec, TensorSpec, manifest_path, read_manifest, read_versioned)
