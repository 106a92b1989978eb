"""Image quality filters: clouds and haze (``cloud_v1``), saturated or clipped tiles
(``saturation_v1``). Both are image-stage filters and score every sample they see.

``cloud_v1`` counts the cloudy share of a tile's valid pixels (score ``cloud_fraction``) and
rejects it above ``max_fraction`` (reason ``cloudy``). A pixel is cloudy:

- with ``mask_band`` (a band of the source that is a cloud or QA mask, counted from 1 in the
  file): when that band is non-zero, or, with ``mask_values``, when it holds one of those codes
  (Sentinel-2 SCL: ``[8, 9, 10]``, medium and high probability cloud and cirrus). The band is
  row ``mask_band - 1`` of ``sample.data``: the ``geotiff`` source reads every band of the file,
  whatever ``bands`` maps to R, G, B. The mask is resampled with the imagery (bilinear, or
  average at a coarser GSD), so codes are exact only on the raster's own grid; "non-zero"
  holds anywhere. The build checks before any work that every imagery source has that band.
- otherwise by a heuristic on the 8-bit RGB: bright (each of R, G and B >= ``min_brightness``),
  white (max - min of R, G, B <= ``max_saturation``) and smooth (the standard deviation of the
  grey level in the pixel's 3 x 3 neighbourhood < ``max_texture``). Thick cloud and dense haze
  are bright, colourless and featureless; a bright city has edges. The heuristic cannot tell
  cloud from other bright, white, smooth ground: snow and ice, white or metal roofs, salt flats
  and dry lake beds, white sand, sun glint on water, and any large flat bright surface; it
  misses thin haze and cirrus through which the ground's texture shows, cloud shadows, and
  clouds the stretch leaves grey (a source stretched to its own clouds makes them white). The
  colours are the recipe's bands: a false-colour composite shows clouds and snow white too.

Tiles larger than 128 px are judged on every k-th pixel (``qa/pixels.py`` ``preview``), so
both cost what a 128 px tile does.

``saturation_v1`` is, per band of the 8-bit RGB, the share of valid pixels at 0 or 255; the
largest share is the score ``saturated_fraction``, and a tile above ``max_fraction`` is
rejected (reason ``saturated``). It catches a stretch that clips: a uint16 source stretched
with ``scale: none`` is 255 wherever its value exceeds 255 (the plan warns of that too). The
``auto`` stretch clips about 2% of a source's pixels at each end by design.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from geoweave.errors import FatalError
from geoweave.protocols import ImagerySource
from geoweave.qa.pixels import grey_sum_of, planes_of, preview, smooth, smooth_at, valid_of
from geoweave.record import Sample
from geoweave.registry import FILTERS


class CloudOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mask_band: int | None = Field(
        None, ge=1, description="1-based band of the source that is a cloud/QA mask"
    )
    mask_values: list[int] | None = Field(
        None, min_length=1, description="cloudy codes of the mask band (default: non-zero)"
    )
    max_fraction: float = Field(0.5, ge=0, le=1, description="reject tiles more cloudy")
    min_brightness: int = Field(200, ge=0, le=255, description="heuristic: R, G, B at least")
    max_saturation: int = Field(40, ge=0, le=255, description="heuristic: max - min of R, G, B")
    max_texture: float = Field(12.0, ge=0, description="heuristic: 3x3 grey std below this")

    @model_validator(mode="after")
    def _values_need_band(self) -> CloudOptions:
        if self.mask_values is not None and self.mask_band is None:
            raise ValueError("mask_values needs mask_band (the band that holds those codes)")
        return self


@FILTERS.add("cloud_v1")
class CloudFilter:
    """Cloudy tiles: a mask band's cloudy share, or the bright-white-smooth heuristic."""

    name = "cloud_v1"
    stage: ClassVar[Literal["image", "text"]] = "image"
    Options = CloudOptions

    def __init__(self, opts: CloudOptions) -> None:
        self.opts = opts
        self.codes = np.array(opts.mask_values) if opts.mask_values else None

    @staticmethod
    def check_imagery(opts: CloudOptions, sources: Sequence[ImagerySource]) -> None:
        """Every source must hold the mask band (FatalError naming the field); the build calls
        this once before any work."""
        band = opts.mask_band
        for src in sources:
            count = getattr(src, "count", None)  # the geotiff source's band count
            if band is not None and count is not None and band > count:
                raise FatalError(
                    f"filters.cloud_v1.mask_band: {band} is not a band of imagery {src.name} "
                    f"({count} bands); give the 1-based band of its cloud or QA mask, or drop "
                    "mask_band to use the brightness heuristic"
                )

    def check(self, sample: Sample) -> str | None:
        if sample.rgb is None:
            return "no_image"
        valid = valid_of(sample)  # tiles over 128 px: every k-th pixel (an unbiased share)
        if self.opts.mask_band:
            cloudy = preview(self._from_mask(sample))
        else:  # the planes and the grey sum are shared with the other filters and the hashes
            cloudy = self._heuristic(planes_of(sample), lambda: grey_sum_of(sample))
        n = cloudy.size if valid is None else int(np.count_nonzero(valid))
        hits = np.count_nonzero(cloudy if valid is None else cloudy & valid)
        fraction = float(hits / n) if n else 0.0
        sample.scores["cloud_fraction"] = round(fraction, 4)
        return "cloudy" if fraction > self.opts.max_fraction else None

    def _from_mask(self, sample: Sample) -> np.ndarray:
        band = self.opts.mask_band
        assert band is not None
        if sample.data is None or band > sample.data.shape[0]:
            have = 0 if sample.data is None else sample.data.shape[0]
            raise ValueError(f"cloud_v1: mask_band {band}, but the tile has {have} bands")
        mask = sample.data[band - 1]
        return mask != 0 if self.codes is None else np.isin(mask, self.codes)

    def _heuristic(self, planes: np.ndarray, grey: Callable[[], np.ndarray]) -> np.ndarray:
        """Bright, white and smooth pixels of (3, h, w) R, G, B ``planes``; ``grey`` gives
        their grey sum, asked for only when a pixel is bright and white."""
        r, g, b = planes
        lo = np.minimum(np.minimum(r, g), b)
        cloudy = lo >= self.opts.min_brightness
        if not cloudy.any():  # most tiles: nothing bright, nothing more to compute
            return cloudy
        cloudy &= np.maximum(np.maximum(r, g), b) - lo <= self.opts.max_saturation
        if cloudy.any():  # the texture costs most: only where a pixel is bright and white
            cloudy &= smooth_where(grey(), cloudy, self.opts.max_texture)
        return cloudy


def smooth_where(total: np.ndarray, candidates: np.ndarray, max_texture: float) -> np.ndarray:
    """``pixels.smooth(total, max_texture)`` (``total`` the grey sum) at the candidate pixels:
    equal to the whole-tile result at every candidate (elsewhere False, or the texture inside
    the box; the filter ANDs it with the candidates).

    Few candidates (a median 42 of 16,384 on the benchmark mosaic, where 6 tiles in 10 have
    some): each candidate's 3 x 3 neighbourhood is gathered (``smooth_at``). Many: the texture
    over the box holding them plus the one-pixel ring their neighbourhoods need (inside the
    tile a neighbourhood reads real pixels, at the tile's edges the box's edge padding is the
    tile's)."""
    h, w = candidates.shape
    flat = np.flatnonzero(candidates)  # 10x faster than a 2-D np.nonzero
    ys, xs = np.divmod(flat, w)
    y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs.min()), int(xs.max()) + 1
    if flat.size <= SPARSE_BASE + (y1 - y0 + 2) * (x1 - x0 + 2) // SPARSE_PER_BOX_PX:
        out = np.zeros(h * w, dtype=bool)
        out[flat] = smooth_at(total, ys, xs, max_texture)
        return out.reshape(h, w)
    out = np.zeros((h, w), dtype=bool)
    ya, xa, yb, xb = max(y0 - 1, 0), max(x0 - 1, 0), min(y1 + 1, h), min(x1 + 1, w)
    box = smooth(total[ya:yb, xa:xb], max_texture)
    out[y0:y1, x0:x1] = box[y0 - ya : y1 - ya, x0 - xa : x1 - xa]
    return out


# Gathering costs about 35 us + 0.23 us a candidate, the box texture 95 us + 4 ns a pixel of
# the box (numpy 2.2, 2-core EPYC): gathering is the cheaper up to 256 + box / 64 candidates.
SPARSE_BASE, SPARSE_PER_BOX_PX = 256, 64


class SaturationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_fraction: float = Field(
        0.5, ge=0, le=1, description="reject tiles with a band more saturated than this"
    )


@FILTERS.add("saturation_v1")
class SaturationFilter:
    """Saturated or clipped tiles: the share of valid pixels at 0 or 255, worst band."""

    name = "saturation_v1"
    stage: ClassVar[Literal["image", "text"]] = "image"
    Options = SaturationOptions

    def __init__(self, opts: SaturationOptions) -> None:
        self.max_fraction = opts.max_fraction

    def check(self, sample: Sample) -> str | None:
        if sample.rgb is None:
            return "no_image"
        fraction = edge_fraction(planes_of(sample), valid_of(sample))  # every k-th px > 128
        sample.scores["saturated_fraction"] = round(fraction, 4)
        return "saturated" if fraction > self.max_fraction else None


def edge_fraction(planes: np.ndarray, valid: np.ndarray | None) -> float:
    """The largest share, over (3, H, W) uint8 planes, of valid pixels at 0 or 255."""
    n = planes.shape[1] * planes.shape[2] if valid is None else int(np.count_nonzero(valid))
    if n == 0:
        return 0.0
    if planes.min() > 0 and planes.max() < 255:  # most tiles: none at 0 or 255
        return 0.0
    worst = 0
    for plane in planes:
        edge = (plane - np.uint8(1)) >= 254  # uint8 wraps: 0 -> 255, 255 -> 254
        if valid is not None:
            edge &= valid
        worst = max(worst, int(np.count_nonzero(edge)))
    return worst / n
