"""Image-classification studio: all logic, no Streamlit (a test enforces it).

The dashboard (``app.py`` + ``app_pages/``) and the command line (``python -m core``) call the same
functions in these modules.
"""
