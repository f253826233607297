"""Fitting the head template to a photo's 68 landmarks and sampling its partial UV texture (pafs, reconstruct)."""
from headtex.fitting.landmarks import (
    CONTOUR_MODES, JAW, Fit, FitParams, JawRegion, corrected, fit_landmarks, fit_views, fitted_landmarks, jaw_region,
    landmark_nme, scaled_orthographic,
)
from headtex.fitting.photometric import TexelGrid, refine_views, texel_grid
from headtex.fitting.texture import partial_texture, visible_texels

__all__ = ["CONTOUR_MODES", "JAW", "Fit", "FitParams", "JawRegion", "TexelGrid", "corrected", "fit_landmarks",
           "fit_views", "fitted_landmarks", "jaw_region", "landmark_nme", "partial_texture", "refine_views",
           "scaled_orthographic", "texel_grid", "visible_texels"]
