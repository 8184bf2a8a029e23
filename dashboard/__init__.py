"""The Streamlit dashboard's own code beside ``app.py`` and ``app_pages/``: session state and demo paths."""
