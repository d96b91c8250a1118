"""Reading Nsight Systems exports: the only code that knows the nsys SQLite schema.

``schema`` names the tables, codes, enum labels and the globalTid layout; ``export``
opens and checks an export and streams query results as Arrow batches; ``events``
holds the query behind every llmprof table and summary; ``convert`` runs
``nsys export``. Everything above this subpackage sees rows with resolved names,
never an id it must decode.
"""
