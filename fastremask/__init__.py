"""fastremask"""
