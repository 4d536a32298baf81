"""Aligned faces: face types, crops and the metadata they carry."""
