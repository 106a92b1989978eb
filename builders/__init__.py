"""geoweave.builders."""
