"""auditkit.derived"""
