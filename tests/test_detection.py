"""The detection library's photo attempt list (the detectors themselves are exercised on real photos in
test_reconstruct.py and test_real_photos.py)."""
from headtex.detection import detection_attempts


def test_photo_attempts_upsample_once_more_then_fall_back():
    assert detection_attempts("hog", 0, "cnn", 0) == [("hog", 0), ("hog", 1), ("cnn", 0)]


def test_photo_attempts_without_a_fallback_or_with_the_same_detector_never_repeat():
    assert detection_attempts("hog", 1, "", 0) == [("hog", 1), ("hog", 2)]
    # The CNN as both: its fallback at upsample 1 is the second attempt already.
    assert detection_attempts("cnn", 0, "cnn", 1) == [("cnn", 0), ("cnn", 1)]


def test_the_box_the_landmarks_imply_is_the_detectors_and_refining_undoes_a_bad_box():
    """On scikit-image's astronaut (HOG's face, its landmarks as the reference): the box its landmarks imply is
    HOG's box (the rule was measured on synthetic views), and landmarks placed in a box shifted up-left and shrunk
    (off by a fifth of the eye distance) come back to the reference when re-placed in the boxes they imply."""
    import dlib
    import numpy as np
    import skimage.data

    from headtex.detection import box_from_landmarks, detect_faces, iou, landmarks_in_box, refined_landmarks

    image = skimage.data.astronaut()
    box, _ = max(detect_faces(image, "hog", 1), key=lambda face: face[1])
    reference = landmarks_in_box(image, box)
    implied = box_from_landmarks(reference)
    corners = lambda r: (r.left(), r.top(), r.right(), r.bottom())  # noqa: E731
    assert iou(corners(implied), corners(box)) > 0.8
    side = box.width()
    centre_x, centre_y, half = box.center().x - 0.15 * side, box.center().y - 0.1 * side, 0.85 * side / 2
    bad = dlib.rectangle(*(int(v) for v in (centre_x - half, centre_y - half, centre_x + half, centre_y + half)))
    eyes = np.linalg.norm(reference[36] - reference[45])
    error = lambda points: np.linalg.norm(points - reference, axis=1).mean() / eyes  # noqa: E731
    assert error(landmarks_in_box(image, bad)) > 0.15
    assert error(refined_landmarks(image, bad, 5)) < 0.03
    assert np.array_equal(refined_landmarks(image, box, 0), reference)
