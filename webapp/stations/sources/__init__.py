"""Station sources by kind. Each factory is called as ``factory(settings, station_id=...)``; add one line per kind."""

from webapp.stations.sources.base import Frame, FrameSource, SourceError, source_for
from webapp.stations.sources.camera import ReplaySource, mjpeg_source, rtsp_source
from webapp.stations.sources.folder import FolderSource

SOURCE_KINDS = {
    "folder": FolderSource,
    "rtsp": rtsp_source,
    "mjpeg": mjpeg_source,
    "video": ReplaySource,
}

__all__ = ["SOURCE_KINDS", "Frame", "FrameSource", "SourceError", "source_for"]
