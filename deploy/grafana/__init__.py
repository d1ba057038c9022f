"""Grafana provisioning: dashboards generated as code (build.py) and datasources."""
