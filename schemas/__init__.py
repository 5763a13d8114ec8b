"""JSON Schemas (draft 2020-12) of the ancillary package format v1.

The files live at the top of the repository in `schemas/` and ship inside the
installed package as `auditkit.schemas`; load them with
`auditkit.validation.load_schema`.
"""
