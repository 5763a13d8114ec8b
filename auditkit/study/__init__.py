"""auditkit.study"""
