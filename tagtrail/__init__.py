"""tagtrail: RFID e-bike sightings, theft alerts and recovery on Kafka, Faust and ClickHouse."""

__version__ = "0.1.0"
