"""Fitting the head template to a photo's 68 landmarks and sampling its partial UV texture (pafs, reconstruct)."""
from headtex.fitting.landmarks import (
    CONTOUR_MODES, JAW, LANDMARK_GROUPS, LANDMARK_LOSSES, Fit, FitParams, JawRegion, LandmarkLoss, PLAIN_FIT, corrected, fit_landmarks, fit_views, fitted_landmarks, image_fit, jaw_region,
    landmark_nme, scaled_orthographic,
)
from headtex.fitting.dense import (
    POINT_GROUPS, DenseAssets, DensePoints, corrected_dense, dense_assets, dense_points, dense_targets, fit_dense, fit_dense_views, point_weights,
)
from headtex.fitting.photometric import TexelGrid, refine_views, texel_grid
from headtex.fitting.texture import (
    head_box, partial_texture, photo_partial_texture, sampling_view, scaled_fit, visible_texels,
)

__all__ = ["POINT_GROUPS", "DenseAssets", "DensePoints", "corrected_dense", "dense_assets", "dense_points", "dense_targets",
           "fit_dense", "fit_dense_views", "point_weights", "CONTOUR_MODES", "JAW", "LANDMARK_GROUPS", "LANDMARK_LOSSES",
           "Fit", "FitParams", "JawRegion", "LandmarkLoss", "PLAIN_FIT", "TexelGrid", "corrected", "fit_landmarks",
           "fit_views", "fitted_landmarks", "head_box", "image_fit", "jaw_region", "landmark_nme", "partial_texture",
           "photo_partial_texture", "refine_views", "sampling_view", "scaled_fit", "scaled_orthographic", "texel_grid",
           "visible_texels"]
