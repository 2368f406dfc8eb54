"""presend"""
