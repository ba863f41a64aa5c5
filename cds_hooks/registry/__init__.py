"""Registry exports (issue 14): CRS and ICANS episodes for a whole population, from a FHIR Bulk
Data export to registry-ready rows, with a site validation report and FHIR output.

Stages, each its own module: ``export_reader`` (the export's files and manifest), ``per_patient``
(one patient's resources -> rows, with the reader and the episode rules the card uses),
``engines`` (local: ``file_lines`` and ``partition`` place the lines in bucket files by patient,
out of core, and worker processes grade a bucket at a time in ``bucket_grading``; Spark: the same
per-patient function), ``rows`` (the columns), ``writers`` (csv, parquet, ndjson), ``validate``
(agreement and weighted kappa against a site's abstraction) and ``fhir_out`` (Condition and
Observation per episode). Heavy dependencies (pyarrow, pyspark) are imported inside the functions
that need them.
"""
