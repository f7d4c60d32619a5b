"""The portable noise generator the apps reproduce: golden values, and it really is standard normal."""

from __future__ import annotations

import json

import numpy as np

from edgekd.portable_noise import Mulberry32, portable_noise, portable_normals
from edgekd_testing import ROOT


def test_matches_golden_file_and_reference_mulberry32():
    golden = json.loads((ROOT / "apps" / "golden" / "portable-noise.json").read_text())
    rng = Mulberry32(42)
    # 2581720956 is the first output of the widely published JavaScript mulberry32(42)
    assert [rng.next_uint32() for _ in range(8)] == golden["uint32_seed42_first8"]
    assert golden["uint32_seed42_first8"][0] == 2581720956
    for seed, values in golden["normals"].items():
        np.testing.assert_array_equal(portable_normals(int(seed), 16), np.float32(values))


def test_is_standard_normal_and_indexed_by_seed_plus_image():
    z = portable_normals(7, 200_000).astype(np.float64)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    batch = portable_noise(5, 2, 3, (1, 4, 4))
    assert batch.shape == (3, 1, 4, 4) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[1].ravel(), portable_normals(8, 16))
