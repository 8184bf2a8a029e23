"""Figure builders: plain functions from results to plotly figures, no Streamlit (``tabular``, ``imaging``)."""

from normcore.plotting import imaging, tabular

__all__ = ["imaging", "tabular"]
