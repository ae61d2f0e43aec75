"""Streamlit helpers shared by the pages: state, the dataset picker, views and figures.

This package may import streamlit; ``core`` may not. Logic belongs in ``core``: these modules only read
widgets, call core, and draw.
"""
