"""Station sources by kind. Each factory is called as ``factory(settings, station_id=...)``; add one line per kind."""

from webapp.stations.sources.base import Frame, FrameSource, SourceError, source_for
from webapp.stations.sources.folder import FolderSource

SOURCE_KINDS = {
    "folder": FolderSource,
}

__all__ = ["SOURCE_KINDS", "Frame", "FrameSource", "SourceError", "source_for"]
