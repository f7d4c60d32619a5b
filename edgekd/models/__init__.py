"""Models describe themselves: every model is a list of graphs plus one sampling spec (edgekd/models/spec.py).

Export, quantization, parity, profile and sample grids loop over ``graphs()`` and follow ``sampling()``; none of
them asks what kind of model it holds.
"""
