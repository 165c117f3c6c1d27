"""Rendering results to files: learning-curve plots of a run (``plots``), the evaluation suite's, sweep's and
probes' figures (``figures``), the evaluation report writer (JSON + Markdown + PNG, ``writer``) and the bench
report (``bench``)."""
