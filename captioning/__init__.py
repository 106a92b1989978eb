"""geoweave.captioning."""
