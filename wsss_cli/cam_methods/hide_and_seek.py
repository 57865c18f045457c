"""Hide-and-Seek (Singh & Lee, ICCV 2017 / TPAMI 2018): the plain CAM trained on images
with random grid cells hidden, so that it must also learn the object's less telling parts.
The hiding itself is train-cls's ``--hide-and-seek`` (``ops.hide_patches``), which any
method may use; this method is the plain CAM with it on."""

from __future__ import annotations

from typing import Any

from wsss_cli.cam_methods.cam import PlainCam


class HideAndSeek(PlainCam):
    options: dict[str, Any] = {"hide_and_seek": True}  # noqa: RUF012 (read only)


HIDE_AND_SEEK = HideAndSeek()
