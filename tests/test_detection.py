"""The detection library's photo attempt list (the detectors themselves are exercised on real photos in
test_reconstruct.py and test_real_photos.py)."""
from headtex.detection import detection_attempts


def test_photo_attempts_upsample_once_more_then_fall_back():
    assert detection_attempts("hog", 0, "cnn", 0) == [("hog", 0), ("hog", 1), ("cnn", 0)]


def test_photo_attempts_without_a_fallback_or_with_the_same_detector_never_repeat():
    assert detection_attempts("hog", 1, "", 0) == [("hog", 1), ("hog", 2)]
    # The CNN as both: its fallback at upsample 1 is the second attempt already.
    assert detection_attempts("cnn", 0, "cnn", 1) == [("cnn", 0), ("cnn", 1)]
