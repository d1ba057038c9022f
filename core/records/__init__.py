"""Record types and codecs defined once: reads, sightings, alerts and the hotlist, readers."""
