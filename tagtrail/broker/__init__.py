"""The local Kafka broker the product runs (`tagtrail up`, tests, benchmarks): jars from Maven
Central."""
