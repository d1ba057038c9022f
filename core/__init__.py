"""The ground layer: settings, errors, record types and their codecs, runtime helpers; imports
nothing of ours."""
