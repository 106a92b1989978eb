"""geoweave.manifests."""
