"""geoweave.qa."""
