"""geoweave: remote-sensing image-text corpora from imagery and OpenStreetMap."""

__version__ = "0.1.0"
