"""Render a `SynthSample` to an RGB image and a face mask with OpenCV.

Geometry lives in face units (1 unit = 0.32 of the image side, origin at the head centre,
x right, y down). Each point carries a depth z on a sphere-like head, so pose is a true 3D
rotation followed by an orthographic projection: yaw and pitch slide the nose, eyes and mouth
across the face while the outline barely moves, roll rotates everything.

Anti-aliasing: the scene is drawn at 4x (2x for sizes above 96 px) with LINE_AA and sub-pixel
coordinates, then reduced with INTER_AREA.

Mask (uint8, 255 inside): the whole head as drawn - face skin, ears, neck and all hair (the
cap over the forehead and hair hanging behind the head). It is computed from the same
polygons at the same resolution, reduced with INTER_AREA and thresholded at half coverage;
everything outside it is background.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from sfsr.synth.background import render_background
from sfsr.synth.factors import EXPRESSION_FACTORS, IdentityParams, SynthSample, identity_params

MIN_SIZE, MAX_SIZE = 32, 256
_UNIT = 0.32  # face unit as a fraction of the image side
_CENTRE = (0.5, 0.53)  # head centre as a fraction of the image side
_SHIFT = 4  # fixed-point bits for cv2 drawing (1/16 px precision)


class _Canvas:
    """Supersampled image + mask and the pose projection from face units to pixels."""

    def __init__(self, size: int, factor: int, pose_deg: tuple[float, float, float]) -> None:
        self.res = size * factor
        self.image = np.zeros((self.res, self.res, 3), np.uint8)
        self.mask = np.zeros((self.res, self.res), np.uint8)
        self.unit = _UNIT * self.res
        yaw, pitch, roll = (math.radians(a) for a in pose_deg)
        self._rot = (math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(roll), math.sin(roll))

    def project(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Face-unit points -> (N, 2) fixed-point pixel coords for cv2 (int32)."""
        cy_, sy_, cp, sp, cr, sr = self._rot
        x1 = x * cy_ + z * sy_  # yaw about the vertical axis
        z1 = -x * sy_ + z * cy_
        y1 = y * cp + z1 * sp  # pitch about the horizontal axis (front goes down)
        x2 = x1 * cr - y1 * sr  # roll in the image plane (clockwise on screen)
        y2 = x1 * sr + y1 * cr
        px = (_CENTRE[0] * self.res + x2 * self.unit) * (1 << _SHIFT)
        py = (_CENTRE[1] * self.res + y2 * self.unit) * (1 << _SHIFT)
        return np.stack([px, py], axis=-1).round().astype(np.int32)

    def fill(self, pts: np.ndarray, colour, in_mask: bool = False, layer=None) -> None:
        target = self.image if layer is None else layer
        cv2.fillPoly(target, [pts], _bgr(colour), cv2.LINE_AA, _SHIFT)
        if in_mask:
            cv2.fillPoly(self.mask, [pts], 255, cv2.LINE_AA, _SHIFT)

    def line(self, pts: np.ndarray, colour, width_units: float) -> None:
        thick = max(1, int(round(width_units * self.unit)))
        cv2.polylines(self.image, [pts], False, _bgr(colour), thick, cv2.LINE_AA, _SHIFT)


def _bgr(c) -> tuple[int, int, int]:
    # The canvas is RGB throughout; cv2 only sees a 3-tuple, so no channel swap is needed.
    return (int(c[0]), int(c[1]), int(c[2]))


def _shade(c, k: float) -> tuple[int, int, int]:
    r, g, b = (int(np.clip(v * k, 0, 255)) for v in c)
    return r, g, b


def _mix(a, b, t: float) -> tuple[int, int, int]:
    r, g, bl = (int(round(x * (1 - t) + y * t)) for x, y in zip(a, b))
    return r, g, bl


class _Face:
    """Face-specific geometry: head outline, surface depth, feature anchors."""

    def __init__(self, ident: IdentityParams) -> None:
        self.p = ident
        self.w = ident.face_width  # horizontal half-axis
        self.h = ident.face_width * ident.face_length  # vertical half-axis
        self.eye_y = -0.02 * self.h
        self.nose_y = 0.3 * self.h
        self.mouth_y = 0.6 * self.h

    def depth(self, x: np.ndarray, y: np.ndarray, bump: float = 0.0) -> np.ndarray:
        r2 = (x / (self.w * 1.08)) ** 2 + (y / (self.h * 1.08)) ** 2
        return np.sqrt(np.clip(1.0 - r2, 0.0, 1.0)) * self.w * 0.9 + bump

    def outline(self, n: int = 72, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Head outline: elliptic cranium, superelliptic (squarer) jaw for the lower half."""
        t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
        c, s = np.cos(t), np.sin(t)
        e = 2.0 / (2.0 + 2.5 * self.p.jaw_squareness)  # exponent < 1 squares the jaw
        lower = s > 0
        x = np.where(lower, np.sign(c) * np.abs(c) ** e, c) * self.w * scale
        y = np.where(lower, np.sign(s) * np.abs(s) ** e, s) * self.h * scale
        return x, y


def _ellipse_pts(cx, cy, rx, ry, n=32, a0=0.0, a1=2 * np.pi):
    t = np.linspace(a0, a1, n)
    return cx + rx * np.cos(t), cy + ry * np.sin(t)


def _hair(cv: _Canvas, f: _Face, front: bool) -> None:
    """Back hair (behind the head) when front=False, hair over the head when front=True."""
    style, col, w, h = f.p.style, f.p.hair_rgb, f.w, f.h
    if not front:
        if style in ("long", "bob"):
            # Long hair tapers to the bottom edge, so the frame's corners stay background.
            bottom = 1.5 if style == "long" else 0.8 * h
            taper = 1.0 if style == "long" else 1.22
            x = np.array([-taper * w, -1.22 * w, 1.22 * w, taper * w])
            y = np.array([bottom, -0.3 * h, -0.3 * h, bottom])
            tx, ty = _ellipse_pts(0.0, -0.3 * h, 1.22 * w, 1.02 * h, 24, np.pi, 2 * np.pi)
            x, y = np.concatenate([x[:2], tx, x[2:]]), np.concatenate([y[:2], ty, y[2:]])
            cv.fill(cv.project(x, y, np.full_like(x, -0.5)), col, True)
        elif style == "afro":
            x, y = _ellipse_pts(0.0, -0.35 * h, 1.5 * w, 1.1 * h, 48)
            cv.fill(cv.project(x, y, np.full_like(x, -0.5)), col, True)
        return
    if style == "bald":  # side tufts above the ears keep the hair colour visible
        for sx in (-1.0, 1.0):
            x, y = _ellipse_pts(sx * 0.93 * w, -0.3 * h, 0.14 * w, 0.28 * h, 20)
            cv.fill(cv.project(x, y, f.depth(x, y)), col, True)
        return
    # Styles differ in silhouette (volume, flat or lopsided top) and in hairline height, so
    # they stay distinguishable at 32 px. Hairlines stay above the highest brow position.
    volume = {"buzz": 1.01, "spiky": 1.04, "afro": 1.05}.get(style, 1.12)
    n = 40
    # Hairline from right to left (closing the polygon); y as a function of x in [-1, 1].
    hx = np.linspace(1.0, -1.0, n)
    if style in ("fringe", "bob"):  # straight bangs
        hy = np.full(n, -0.66) - 0.06 * hx**8
    elif style == "side_part":  # diagonal hairline, high on the puffed-up left side
        hy = -0.74 + 0.1 * hx - 0.1 * hx**8
    elif style == "long":  # curtains: hair comes down the sides of the face
        hy = -0.74 + 1.0 * hx**12
    elif style == "buzz":  # receding: a high hairline over a thin cap
        hy = -0.84 + 0.3 * hx**4
    else:  # crop, afro, spiky: rounded hairline
        hy = -0.72 + 0.35 * hx**4
    # The outer arc ends at the hairline's height on each side, so the cap meets the face
    # there instead of leaving a thin strand down the cheek.
    t_left = np.pi - np.arcsin(np.clip(hy[-1] / volume, -1.0, 1.0))
    t_right = 2 * np.pi + np.arcsin(np.clip(hy[0] / volume, -1.0, 1.0))
    t = np.linspace(t_left, t_right, n)  # over the top of the head, left to right
    vol = volume + (0.22 * np.clip(-np.cos(t), 0.0, 1.0) if style == "side_part" else 0.0)
    ox, oy = np.cos(t) * w * vol, np.sin(t) * h * vol
    if style == "crop":  # flat top
        oy = np.maximum(oy, -1.02 * h)
    hx, hy = hx * w * 1.001, hy * h
    x, y = np.concatenate([ox, hx]), np.concatenate([oy, hy])
    z = np.concatenate([np.zeros(n), f.depth(hx, hy)])
    cv.fill(cv.project(x, y, z), col, True)
    if style == "spiky":
        for k in np.linspace(-0.75, 0.75, 6):
            a = np.pi * 1.5 + k * 1.2
            bx, by = np.cos(a) * w, np.sin(a) * h
            x = np.array([bx - 0.18 * w, bx * 1.35, bx + 0.18 * w])
            y = np.array([by + 0.1, by * 1.35 - 0.12, by + 0.1])
            cv.fill(cv.project(x, y, np.zeros(3)), col, True)


def _eye(cv: _Canvas, f: _Face, side: float, e: dict[str, float]) -> None:
    ew = f.p.eye_size
    cx, cy = side * f.p.eye_spacing, f.eye_y
    eh = ew * (0.06 + 0.78 * e["eye_open"])
    lid = _shade(f.p.skin_rgb, 0.35)
    xs = np.linspace(-ew, ew, 24)
    prof = 1.0 - (xs / ew) ** 2
    if e["eye_open"] < 0.08:  # closed: just the lid line, curved down like a sleeping eye
        x, y = cx + xs, cy + 0.25 * ew * prof
        cv.line(cv.project(x, y, f.depth(x, y)), lid, 0.06)
        return
    up_y, lo_y = cy - eh * prof, cy + 0.8 * eh * prof
    x = np.concatenate([cx + xs, cx + xs[::-1]])
    y = np.concatenate([up_y, lo_y[::-1]])
    pts = cv.project(x, y, f.depth(x, y))
    cv.fill(pts, (250, 250, 250))
    # Iris and pupil, clipped to the eye white through a local layer.
    layer = cv.image.copy()
    ix, iy = _ellipse_pts(cx, cy + 0.1 * eh, 0.5 * ew, 0.5 * ew, 24)
    cv.fill(cv.project(ix, iy, f.depth(ix, iy, 0.02)), f.p.eye_rgb, layer=layer)
    px, py = _ellipse_pts(cx, cy + 0.1 * eh, 0.22 * ew, 0.22 * ew, 16)
    cv.fill(cv.project(px, py, f.depth(px, py, 0.02)), (10, 10, 10), layer=layer)
    clip = np.zeros(cv.mask.shape, np.uint8)
    cv2.fillPoly(clip, [pts], 255, cv2.LINE_AA, _SHIFT)
    # Composite only inside the eye's bounding box: the rest of the layer is unchanged.
    x0, y0 = np.maximum((pts.min(axis=0) >> _SHIFT) - 2, 0)
    x1, y1 = (pts.max(axis=0) >> _SHIFT) + 3
    box = (slice(y0, y1), slice(x0, x1))
    a = clip[box][..., None].astype(np.float32) / 255.0
    cv.image[box] = (layer[box] * a + cv.image[box] * (1.0 - a)).round().astype(np.uint8)
    cv.line(pts[: len(xs)], lid, 0.05)  # upper lid


def _brow(cv: _Canvas, f: _Face, side: float, e: dict[str, float]) -> None:
    ew, sx = f.p.eye_size, f.p.eye_spacing
    base = f.eye_y - ew * 0.62 - 0.15 - 0.16 * e["brow_raise"]
    inner, outer = sx - 1.0 * ew, sx + 1.15 * ew
    xs = np.array([inner, 0.5 * (inner + outer), outer])
    # brow_angle > 0 pulls the inner end down (anger), < 0 lifts it (sadness, fear).
    angle, raise_ = e["brow_angle"], e["brow_raise"]
    ys = base + np.array([0.2 * angle, -0.05 - 0.02 * raise_, -0.04 * angle])
    x, y = side * xs, ys
    cv.line(cv.project(x, y, f.depth(x, y, 0.04)), _brow_colour(f.p), f.p.brow_thickness)


def _lum(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _brow_colour(p: IdentityParams) -> tuple[int, int, int]:
    """The hair colour, darkened (light skin) or lightened (dark skin) until it stands out
    from the skin by ~80 grey levels, so brows stay readable at 32 px for every identity."""
    skin, hair = _lum(p.skin_rgb), _lum(p.hair_rgb)
    if skin >= 110:
        return _shade(p.hair_rgb, min(0.7, (skin - 80) / max(hair, 1.0)))
    t = float(np.clip((skin + 80 - hair) / max(255 - hair, 1.0), 0.0, 1.0))
    return _mix(p.hair_rgb, (235, 235, 235), t)


def _nose(cv: _Canvas, f: _Face) -> None:
    k, y0 = f.p.nose_size, f.nose_y
    col = _shade(f.p.skin_rgb, 0.72)
    style = f.p.nose_style
    if style == 0:  # triangle
        x = np.array([0.0, -0.13 * k, 0.13 * k])
        y = np.array([y0 - 0.26 * k, y0, y0])
        cv.fill(cv.project(x, y, f.depth(x, y, np.array([0.1, 0.0, 0.0]) * k)), col)
    elif style == 1:  # round tip with nostrils
        x, y = _ellipse_pts(0.0, y0 - 0.04 * k, 0.12 * k, 0.08 * k, 20)
        cv.fill(cv.project(x, y, f.depth(x, y, 0.12 * k)), col)
    else:  # bridge line and a base stroke
        x, y = np.array([0.02, 0.0, -0.1 * k, 0.1 * k]), y0 + np.array([-0.3, 0.0, 0.0, 0.0]) * k
        cv.line(cv.project(x[:2], y[:2], f.depth(x[:2], y[:2], 0.08)), col, 0.05)
        cv.line(cv.project(x[2:], y[2:], f.depth(x[2:], y[2:], 0.08)), col, 0.06)


def _mouth(cv: _Canvas, f: _Face, e: dict[str, float]) -> None:
    hw = 0.3 * (1.0 + 0.45 * e["mouth_width"])  # half-width
    xs = np.linspace(-hw, hw, 28)
    t = xs / hw
    bend = -0.2 * e["mouth_curve"] * t**2  # smile raises the corners (y is down)
    opening = 0.34 * e["mouth_open"] * (1.0 - t**2) ** 0.7
    y_up = f.mouth_y + bend - 0.3 * opening
    y_lo = f.mouth_y + bend + 0.7 * opening
    lip = _mix(_shade(f.p.skin_rgb, 0.78), (200, 40, 70), 0.45 + 0.45 * f.p.lip_tint)
    if e["mouth_open"] > 0.04:
        x = np.concatenate([xs, xs[::-1]])
        y = np.concatenate([y_up, y_lo[::-1]])
        cv.fill(cv.project(x, y, f.depth(x, y)), (70, 15, 25))
        if e["mouth_curve"] > 0.3:  # a smile with an open mouth shows the upper teeth
            tx = np.concatenate([xs * 0.8, xs[::-1] * 0.8])
            ty = np.concatenate([y_up * 0.999 + 0.01, (y_up + 0.35 * (y_lo - y_up))[::-1]])
            cv.fill(cv.project(tx, ty, f.depth(tx, ty)), (245, 245, 240))
        cv.line(cv.project(xs, y_lo + 0.02, f.depth(xs, y_lo)), lip, 0.09)
    cv.line(cv.project(xs, y_up - 0.01, f.depth(xs, y_up)), lip, 0.11)


def _facial_hair(cv: _Canvas, f: _Face) -> None:
    kind, col = f.p.facial_hair, f.p.hair_rgb
    if kind == 3:  # moustache
        xs = np.linspace(-0.3, 0.3, 16)
        y = f.mouth_y - 0.1 - 0.04 * (1 - (xs / 0.3) ** 2)
        cv.line(cv.project(xs, y, f.depth(xs, y)), col, 0.07)
    elif kind == 4:  # beard band along the jaw, kept below the mouth
        x, y = f.outline(72)
        keep = y > 0.35 * f.h
        ox, oy = x[keep], y[keep]
        ix, iy = ox * 0.82, f.h * 0.35 + (oy - f.h * 0.35) * 0.55
        bx, by = np.concatenate([ox, ix[::-1]]), np.concatenate([oy, iy[::-1]])
        bz = np.concatenate([np.zeros(len(ox)), f.depth(ix[::-1], iy[::-1])])
        cv.fill(cv.project(bx, by, bz), col)


def _blush(cv: _Canvas, f: _Face, amount: float) -> None:
    if amount <= 0.02:
        return
    layer = cv.image.copy()
    for side in (-1.0, 1.0):
        x, y = _ellipse_pts(side * 0.52 * f.w, 0.2 * f.h, 0.2, 0.12, 24)
        cv.fill(cv.project(x, y, f.depth(x, y)), (235, 60, 90), layer=layer)
    a = 0.75 * amount
    cv.image[:] = cv2.addWeighted(layer, a, cv.image, 1.0 - a, 0.0)


def render(sample: SynthSample, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Draw `sample` at `size` px: RGB uint8 (size, size, 3) and mask uint8 (size, size)."""
    if not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise ValueError(f"size={size} is outside [{MIN_SIZE}, {MAX_SIZE}]; pick a size in range")
    size = int(size)
    factor = 4 if size <= 96 else 2
    pose = sample.pose
    cv = _Canvas(size, factor, (pose.yaw, pose.pitch, pose.roll))
    background = render_background(sample.background_seed, cv.res)  # (R, R, 3) float
    cv.image[:] = np.clip(background, 0, 255).astype(np.uint8)
    f = _Face(identity_params(sample.identity_id))
    e = dict(zip(EXPRESSION_FACTORS, (float(v) for v in sample.expression)))
    skin = f.p.skin_rgb

    _hair(cv, f, front=False)
    nx = np.array([-0.42, -0.5, 0.5, 0.42]) * f.w
    ny = np.array([0.5 * f.h, 2.5, 2.5, 0.5 * f.h])
    cv.fill(cv.project(nx, ny, np.full(4, -0.3)), _shade(skin, 0.8), True)  # neck
    for side in (-1.0, 1.0):
        ex, ey = _ellipse_pts(side * 0.97 * f.w, f.eye_y + 0.18, 0.15 * f.p.ear_size, 0.26 * f.p.ear_size, 24)
        cv.fill(cv.project(ex, ey, np.full_like(ex, -0.05)), _shade(skin, 0.88), True)
    hx, hy = f.outline()
    cv.fill(cv.project(hx, hy, np.zeros_like(hx)), skin, True)
    _blush(cv, f, e["blush"])
    _facial_hair(cv, f)
    _nose(cv, f)
    _mouth(cv, f, e)
    for side in (-1.0, 1.0):
        _eye(cv, f, side, e)
        _brow(cv, f, side, e)
    _hair(cv, f, front=True)

    image = cv2.resize(cv.image, (size, size), interpolation=cv2.INTER_AREA)
    cover = cv2.resize(cv.mask, (size, size), interpolation=cv2.INTER_AREA)
    mask = np.where(cover >= 128, 255, 0).astype(np.uint8)
    return image, mask
