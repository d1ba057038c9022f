"""The stream side: validation, sessionizing reads into sightings, H3 geo-index, hotlist alerts."""
