"""Centile bands of deviation reports and their colour-blind-safe diverging palette (ColorBrewer RdBu: blue =
low, red = high, grey = typical).

==============  =====================  ========
band            centile c              colour
==============  =====================  ========
below 1st       c < 0.01               #2166AC
1st-5th         0.01 <= c < 0.05       #67A9CF
5th-95th        0.05 <= c <= 0.95      #BDBDBD
95th-99th       0.95 < c <= 0.99       #EF8A62
above 99th      c > 0.99               #B2182B
==============  =====================  ========
"""

from __future__ import annotations

import numpy as np

BANDS = (("below 1st", "#2166AC"), ("1st-5th", "#67A9CF"), ("5th-95th", "#BDBDBD"), ("95th-99th", "#EF8A62"),
         ("above 99th", "#B2182B"))


def centile_band(c: float) -> str:
    """The band of a centile in 0..1 (see the module table; NaN: 'missing')."""
    if not np.isfinite(c):
        return "missing"
    if c < 0.01:
        return "below 1st"
    if c < 0.05:
        return "1st-5th"
    if c <= 0.95:
        return "5th-95th"
    if c <= 0.99:
        return "95th-99th"
    return "above 99th"


BAND_COLOURS = dict(BANDS) | {"missing": "#FFFFFF"}
