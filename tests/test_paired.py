"""misc.paired: the paired-bootstrap interval of the mean per-image difference between two runs."""
from __future__ import annotations

import numpy as np
import pytest

from misc.paired import paired_bootstrap, same_seed_differences


def test_a_constant_shift_is_the_mean_and_leaves_no_doubt():
    rng = np.random.default_rng(1)
    base = rng.gamma(2.0, 20.0, size=(64, 6))  # images differ a lot from each other
    mean, low, high = paired_bootstrap(base + 1.5, base)
    np.testing.assert_allclose(mean, 1.5)
    np.testing.assert_allclose(low, 1.5)
    np.testing.assert_allclose(high, 1.5)


def test_pairing_cancels_what_the_images_share():
    """Image difficulty (sd 30 px) is common to both runs; the runs differ by 2 px +- 1 px per image.
    The interval is about the difference's spread, not the images' spread, and does not contain 0."""
    rng = np.random.default_rng(2)
    difficulty = rng.normal(50.0, 30.0, size=200)
    mean, low, high = paired_bootstrap(difficulty + 2.0 + rng.normal(0.0, 1.0, 200), difficulty)
    assert low > 0 and high - low < 0.6


def test_the_interval_matches_the_normal_approximation_for_many_images():
    rng = np.random.default_rng(3)
    difference = rng.normal(0.3, 2.0, size=2000)
    mean, low, high = paired_bootstrap(difference, np.zeros_like(difference), resamples=4000)
    half_width = 1.96 * difference.std(ddof=1) / np.sqrt(len(difference))
    assert mean == pytest.approx(difference.mean())
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.1)
    assert low < mean < high


def test_columns_are_bootstrapped_with_the_same_image_draws_and_a_seed_repeats_them():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    together = paired_bootstrap(a, b, resamples=500, seed=7)
    for column in range(3):
        alone = paired_bootstrap(a[:, column], b[:, column], resamples=500, seed=7)
        for whole, single in zip(together, alone):
            assert whole[column] == pytest.approx(single)
    again = paired_bootstrap(a, b, resamples=500, seed=7)
    other = paired_bootstrap(a, b, resamples=500, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(together, again))
    assert not np.array_equal(together[1], other[1])


def test_a_wider_level_gives_a_wider_interval():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=64), rng.normal(size=64)
    _, low90, high90 = paired_bootstrap(a, b, level=0.90)
    _, low99, high99 = paired_bootstrap(a, b, level=0.99)
    assert low99 < low90 and high99 > high90


@pytest.mark.parametrize("a, b, kwargs, message", [
    (np.zeros(5), np.zeros(6), {}, "same shape"),
    (np.zeros(1), np.zeros(1), {}, "at least 2 images"),
    (np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), {}, "(N,) or (N, C)"),
    (np.zeros(5), np.zeros(5), {"level": 1.0}, "level"),
    (np.zeros(5), np.zeros(5), {"resamples": 0}, "resamples"),
    (np.array([0.0, np.nan]), np.zeros(2), {}, "finite"),
])
def test_bad_inputs_are_refused_with_the_reason(a, b, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        paired_bootstrap(a, b, **kwargs)


def test_each_variant_is_paired_with_the_full_run_of_its_own_seed():
    """Seed 1 trains 10 px worse than seed 0 throughout; each variant is 1 px (seed 0: 3 px) worse than the
    full run of its seed. Paired with its own seed the difference is that 1 (3) px; with another seed's
    full run it would be 11 or -7. The full method's seed 1 is compared with its seed 0: +10."""
    rng = np.random.default_rng(4)
    images = rng.gamma(2.0, 20.0, size=(64, 6))
    runs = {(0, "full"): images, (1, "full"): images + 10.0, (0, "no_gating"): images + 3.0,
            (1, "no_gating"): images + 11.0, (1, "no_prev"): images + 9.0}
    differences = same_seed_differences(runs, resamples=200)
    assert list(differences) == ["full", "no_gating", "no_prev"]
    assert list(differences["full"]) == [1] and list(differences["no_gating"]) == [0, 1]
    for variant, seed, shift in (("full", 1, 10.0), ("no_gating", 0, 3.0), ("no_gating", 1, 1.0), ("no_prev", 1, -1.0)):
        for values in differences[variant][seed]:  # mean, low, high
            np.testing.assert_allclose(values, shift, err_msg=f"{variant} seed {seed}")


def test_a_variant_without_a_full_run_of_its_seed_is_left_out():
    images = np.random.default_rng(5).gamma(2.0, 20.0, size=(32, 3))
    differences = same_seed_differences({(0, "full"): images, (2, "no_morph"): images + 1.0}, resamples=50)
    assert differences == {}
