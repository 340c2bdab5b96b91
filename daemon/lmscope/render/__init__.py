"""Renderers that turn a route into pictures (SVG)."""
