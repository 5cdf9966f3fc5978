"""Pixmap tiles of a painted layer, so scrolling blits cached pixels instead of repainting.

A layer (the note grid, the velocity lane) is rendered in content coordinates in square
tiles on demand; a paint then draws the few tiles that cover the viewport. Any change that
alters the picture (notes, selection, zoom, snap) changes the layer's key and drops every
tile, so the cache never shows stale pixels; the least recently used tiles are dropped
beyond `max_tiles` to bound memory (64 tiles of 256² px ≈ 16 MB).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable

from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QPainter, QPixmap

TILE = 256


class TileCache:
    def __init__(self, render: Callable[[QPainter, float, float, int, int], None], tile: int = TILE,
                 max_tiles: int = 96, tile_height: int | None = None) -> None:
        """render(painter, content_x, content_y, width, height) paints that content area at (0, 0)."""
        self._render = render
        self.tile_w = tile
        self.tile_h = tile_height or tile
        self.max_tiles = max_tiles
        self._tiles: OrderedDict[tuple[int, int], QPixmap] = OrderedDict()
        self._key: Hashable = None
        self.rendered = 0  # tiles rendered so far (for tests and benchmarks)

    def invalidate(self) -> None:
        self._tiles.clear()

    def paint(self, p: QPainter, key: Hashable, scroll_x: float, scroll_y: float, width: int, height: int,
              dpr: float = 1.0) -> None:
        """Draw the content area starting at (scroll_x, scroll_y) into the painter at (0, 0)."""
        if key != self._key:
            self._tiles.clear()
            self._key = key
        sx, sy = round(scroll_x), round(scroll_y)
        tw, th = self.tile_w, self.tile_h
        for ty in range(math.floor(sy / th), math.floor((sy + height - 1) / th) + 1):
            for tx in range(math.floor(sx / tw), math.floor((sx + width - 1) / tw) + 1):
                pix = self._tiles.get((tx, ty))
                if pix is None:
                    pix = self._make(tx, ty, dpr)
                else:
                    self._tiles.move_to_end((tx, ty))
                p.drawPixmap(QPointF(tx * tw - sx, ty * th - sy), pix)

    def _make(self, tx: int, ty: int, dpr: float) -> QPixmap:
        pix = QPixmap(int(self.tile_w * dpr), int(self.tile_h * dpr))
        pix.setDevicePixelRatio(dpr)
        pix.fill(Qt.black)
        painter = QPainter(pix)
        self._render(painter, float(tx * self.tile_w), float(ty * self.tile_h), self.tile_w, self.tile_h)
        painter.end()
        self._tiles[(tx, ty)] = pix
        self.rendered += 1
        while len(self._tiles) > self.max_tiles:
            self._tiles.popitem(last=False)
        return pix
