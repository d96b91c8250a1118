"""Drawing and writing for people: figures, the run and study reports in Markdown and HTML.

The only subpackage that imports matplotlib and seaborn; it reads the extract folder, never the SQLite export.
"""
