"""The drawings of the ``shapes-demo`` model, importable from here as before: they live in :mod:`moments_shapes`
(shipped with this distribution, a package of its own so that the export step draws them without importing
the client)."""

from moments_shapes import COLORS as COLORS
from moments_shapes import SHAPES as SHAPES
from moments_shapes import all_captions as all_captions
from moments_shapes import article as article
from moments_shapes import caption as caption
from moments_shapes import draw as draw
from moments_shapes import draw_background as draw_background
from moments_shapes import parse_caption as parse_caption
