"""Land-cover class legends shipped with geoweave."""
