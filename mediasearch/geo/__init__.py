"""Places: an offline GeoNames gazetteer (cities, regions, countries) for reverse geocoding and place names."""
