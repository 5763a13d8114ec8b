"""auditkit.gates"""
