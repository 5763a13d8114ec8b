"""auditkit.package"""
